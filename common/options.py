"""Options declared once, on the stage's config dataclass.

A config field that users can set carries an :class:`Option` in its metadata (made with
:func:`option`): its command-line flag, help, how a string becomes a value, and the check its
value must pass. From that one declaration come the ``argparse`` arguments
(:func:`add_options`), the config built from parsed arguments (:func:`from_namespace`), the
config built from ``key=value`` strings (``scrapy crawl images -a max_depth=2``,
:func:`from_strings`) and the per-field validation every config runs in ``__post_init__``
(:func:`check_fields`), so a config is valid however it was made.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from common.errors import ConfigError

#: Where a stage's work runs: this process, or Ray tasks/actors (the ``cluster`` extra).
EXECUTORS = ("local", "ray")
CLUSTER_EXTRA = "pip install 'capcrawl[cluster]'"

#: A check returns a complaint ("must be greater than 0") or None when the value is fine.
Check = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Option:
    """How one config field appears on the command line."""

    flag: str  # "--max-pages"; "" for a positional argument
    help: str
    parse: Callable[[str], Any] | None = None  # string -> value; default from the field's type
    choices: tuple[Any, ...] | None = None
    check: Check | None = None
    metavar: str | None = None
    action: str | None = None  # "store_true" / "store_false" / "append"
    group: str = ""  # argparse group title
    hidden: bool = False  # settable in code and with -a, not on the command line
    required: bool = False  # the command line must give it (e.g. --work)


def option(default: Any = dataclasses.MISSING, flag: str = "", help: str = "", *, factory: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
    """A dataclass field with an :class:`Option`."""
    meta = {"option": Option(flag, help, **kwargs)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def options_of(cls: type) -> list[tuple[dataclasses.Field, Option]]:
    """The fields of a config class that carry an option, in declaration order."""
    return [(f, f.metadata["option"]) for f in dataclasses.fields(cls) if "option" in f.metadata]


# --- checks ---------------------------------------------------------------------------


def positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def between(low: float, high: float) -> Check:
    def check(value: float) -> str | None:
        ok = value is not None and not (isinstance(value, float) and math.isnan(value)) and low <= value <= high
        return None if ok else f"must be between {low} and {high}"

    return check


def optional(check: Check) -> Check:
    """``check`` for a value that may also be None."""
    return lambda value: None if value is None else check(value)


# --- parsers ----------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """Bytes from '20MB', '512k', '1000' (binary multiples)."""
    t = str(text).strip().lower().removesuffix("b").removesuffix("i")
    mult = {"k": 1024, "m": 1024**2, "g": 1024**3}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 20MB)") from None
    return int(value)


def parse_bool(text: str) -> bool:
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"not a yes/no value: {text!r}")


def parse_list(text: str) -> tuple[str, ...]:
    """``"a,b , c"`` -> ``("a", "b", "c")``."""
    return tuple(s.strip() for s in str(text).split(",") if s.strip())


def _base_type(f: dataclasses.Field, hints: dict[str, Any]) -> Any:
    """The field's type with ``| None`` removed."""
    tp = hints.get(f.name, f.type)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", ())) and len(args) == 1:
        return args[0]
    return tp


def _parser_for(f: dataclasses.Field, opt: Option, hints: dict[str, Any]) -> Callable[[str], Any]:
    if opt.parse is not None:
        return opt.parse
    tp = _base_type(f, hints)
    if tp is bool:
        return parse_bool
    if tp in (int, float, str):
        return tp
    if typing.get_origin(tp) in (tuple, list):
        return parse_list
    return str


# --- argparse ---------------------------------------------------------------------------


def add_options(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    only: Iterable[str] | None = None,
    skip: Iterable[str] = (),
    flags: dict[str, str] | None = None,
    groups: dict[str, Any] | None = None,
) -> None:
    """Add ``cls``'s options to ``parser`` (``only`` / ``skip`` select fields by name).

    ``flags`` renames a field's flag for this parser (``run`` offers two stages' options
    side by side, so one of two same-named flags gets another name there). Defaults come from
    the dataclass; an argument that is not given keeps it.
    """
    hints = typing.get_type_hints(cls)
    only = set(only) if only is not None else None
    skip = set(skip)
    groups = groups if groups is not None else {}
    for f, opt in options_of(cls):
        if opt.hidden or f.name in skip or (only is not None and f.name not in only):
            continue
        target = parser
        if opt.group:
            if opt.group not in groups:
                groups[opt.group] = parser.add_argument_group(opt.group)
            target = groups[opt.group]
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        flag = (flags or {}).get(f.name, opt.flag)
        kwargs: dict[str, Any] = {"help": opt.help}
        if not flag:  # positional
            target.add_argument(f.name, nargs="+" if isinstance(default, (tuple, list)) else None, metavar=opt.metavar, **kwargs)
            continue
        kwargs["dest"] = f.name
        if opt.action in ("store_true", "store_false"):
            target.add_argument(flag, action=opt.action, default=default, **kwargs)
            continue
        if opt.action == "append":
            target.add_argument(flag, action="append", default=None, metavar=opt.metavar, **kwargs)
            continue
        kwargs.update(type=_parser_for(f, opt, hints), metavar=opt.metavar)
        if opt.required:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        if opt.choices is not None:
            kwargs["choices"] = opt.choices
        target.add_argument(flag, **kwargs)


def from_namespace(cls: type, args: argparse.Namespace, **given: Any) -> Any:
    """A ``cls`` from parsed arguments (fields the parser did not have keep their defaults)."""
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for name in names:
        if name in given:
            values[name] = given[name]
        elif hasattr(args, name):
            value = getattr(args, name)
            if isinstance(value, list):
                value = tuple(value)
            if value is not None or _nullable(cls, name):
                values[name] = value
    return cls(**values)


def _nullable(cls: type, name: str) -> bool:
    return type(None) in typing.get_args(typing.get_type_hints(cls).get(name))


def from_strings(cls: type, strings: dict[str, Any], **given: Any) -> Any:
    """A ``cls`` from ``key=value`` strings (``scrapy crawl ... -a key=value``); unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    opts = dict((f.name, o) for f, o in options_of(cls))
    values: dict[str, Any] = dict(given)
    for key, raw in strings.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise ConfigError(f"unknown setting {key!r}; known: {', '.join(sorted(fields))}.")
        if not isinstance(raw, str):
            values[name] = raw
            continue
        parse = _parser_for(fields[name], opts.get(name) or Option("", ""), hints)
        try:
            values[name] = parse(raw)
        except (ValueError, argparse.ArgumentTypeError) as e:
            raise ConfigError(f"{key}={raw!r} is not a valid value ({e}).") from e
    return cls(**values)


def check_fields(config: Any) -> None:
    """Run every option's check and choices on ``config``; raise ConfigError for the first bad value."""
    for f, opt in options_of(type(config)):
        value = getattr(config, f.name)
        name = opt.flag or f.name
        if opt.choices is not None and value is not None and value not in opt.choices:
            raise ConfigError(f"{name} must be one of {', '.join(map(str, opt.choices))}, got {value!r}.")
        if opt.check is not None:
            complaint = opt.check(value)
            if complaint:
                raise ConfigError(f"{name} {complaint}, got {value!r}.")


def check_executor(executor: str, ray_address: str | None) -> None:
    """``--executor ray`` needs Ray installed (looked up, not imported); ``--ray-address`` needs ``--executor ray``."""
    if executor != "ray":
        if ray_address:
            raise ConfigError("--ray-address needs --executor ray.")
        return
    import importlib.util

    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # ValueError: a blocked or half-imported module
        found = False
    if not found:
        raise ConfigError(f"--executor ray needs Ray, which is not installed: {CLUSTER_EXTRA}.")


def replace_frozen(config: Any, **changes: Any) -> None:
    """Set fields of a frozen config in its own ``__post_init__`` (normalising values)."""
    for name, value in changes.items():
        object.__setattr__(config, name, value)


def describe(config: Any) -> dict[str, Any]:
    """The config as plain JSON-able values (for stats files and manifests)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, tuple):
            value = list(value)
        elif not isinstance(value, (str, int, float, bool, list, dict, type(None))):
            value = str(value)
        out[f.name] = value
    return out


def digest(config: Any, fields: Sequence[str] | None = None) -> str:
    """A short stable hash of the config's values (which options a finished stage ran with)."""
    import hashlib
    import json

    d = describe(config)
    if fields is not None:
        d = {k: d[k] for k in fields}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]
