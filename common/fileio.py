"""Files written under a temporary name beside their final one and renamed into place.

Every file capcrawl publishes (crawl and scored parts, embeddings, shards, stats, manifests)
goes through :func:`atomic_path`, so a crash or ``kill -9`` leaves either the old file or the
new one, never half of one. Temporary names are ``.{final name}.{random}.tmp``: a stage that
starts again removes its own leftovers with :func:`remove_stale_temps`.

``tempfile.mkstemp`` creates files readable by their owner only (0600); the final file gets
the mode a plain ``open()`` would give it (0666 less the umask), so published shards are as
readable as the user's umask allows.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

_TEMP = re.compile(r"^\.(?P<final>.+)\.[^.]+\.tmp$")


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, then put it back
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0666 less the umask."""
    return 0o666 & ~current_umask()


def temp_path(final: str | Path) -> Path:
    """A new, empty temporary file beside ``final`` (named ``.{name}.{random}.tmp``)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    return Path(tmp)


def publish(tmp: str | Path, final: str | Path) -> Path:
    """Give a finished temporary file the umask's mode and rename it to ``final``."""
    os.chmod(tmp, file_mode())
    os.replace(tmp, final)
    return Path(final)


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success it becomes ``final``, on error it is removed."""
    tmp = temp_path(final)
    try:
        yield tmp
        publish(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(data: bytes, path: str | Path) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_json(obj: Any, path: str | Path, **dump_kwargs: Any) -> Path:
    """Write ``obj`` as indented UTF-8 JSON (and a final newline) to ``path`` atomically."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, **dump_kwargs) + "\n"
    return atomic_write_bytes(text.encode("utf-8"), path)


def atomic_write_parquet(table: "pyarrow.Table", path: str | Path, **kwargs: Any) -> Path:  # noqa: F821
    """Write ``table`` to a parquet file at ``path`` atomically (zstd unless told otherwise)."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression=kwargs.pop("compression", "zstd"), **kwargs)
    return Path(path)


def final_name_of_temp(name: str) -> str | None:
    """``.part-00001.parquet.ab12cd.tmp`` -> ``part-00001.parquet``; None for other names."""
    m = _TEMP.match(name)
    return m.group("final") if m else None


def remove_stale_temps(directory: str | Path, owned: Callable[[str], bool] = lambda final: True) -> list[Path]:
    """Delete temporary files left in ``directory`` by a killed writer.

    ``owned(final_name)`` says which leftovers belong to the caller: where several processes
    write into one directory (filter machines splitting the parts, crawl workers), each
    removes only the temporary files of the outputs it alone writes.
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    removed = []
    for p in d.iterdir():
        final = final_name_of_temp(p.name)
        if final is not None and p.is_file() and owned(final):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


#: Held (flock) by the command writing a directory: OUT, WORK/crawl.
LOCK_FILE = ".capcrawl.lock"


@contextmanager
def locked_dir(directory: str | Path, label: str, shared: bool = False, name: str = LOCK_FILE,
               probe: bool = False) -> Iterator[None]:
    """Hold a lock on ``directory`` (``label`` names it in errors) while a command writes it;
    fail at once, with a ConfigError, if another command holds it.

    ``shared``: writers that share the directory by design (crawl workers of one frontier,
    each writing parts of its own) take it together, and exclude every exclusive writer.
    The lock goes with the process, however it ends (kill -9 included). ``probe``: check
    only, creating nothing (a missing lock file is nobody's lock).
    """
    import fcntl

    from .errors import ConfigError

    d = Path(directory)
    if probe and not (d / name).is_file():
        yield
        return
    try:
        d.mkdir(parents=True, exist_ok=True)
        fh = open(d / name, "a+")
    except OSError as e:
        raise ConfigError(f"Cannot write to {label} {d}: {e.strerror or e}.") from e
    with fh:
        try:
            fcntl.flock(fh, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise ConfigError(f"Another capcrawl command is writing {d}; wait for it to finish.") from e
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
