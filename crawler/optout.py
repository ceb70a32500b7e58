"""Opt-out signals besides robots.txt access rules: what they say about one URL, as evidence.

Pure functions and small classes, no Scrapy (``crawler/optout_middleware.py`` applies them to
requests and responses). capcrawl builds AI training data, so every signal is read for that
use: AI training, text and data mining and their broader categories forbid it.

Signals, the ``signal`` (row status) each is recorded under, and where they are specified:

- ``tdmrep``: the W3C TDM Reservation Protocol (TDMRep, Community Group final report):
  ``/.well-known/tdmrep.json`` (a JSON array of ``{"location", "tdm-reservation",
  "tdm-policy"}`` rules; the first rule whose location matches decides), the
  ``tdm-reservation``/``tdm-policy`` response headers and ``<meta name="tdm-reservation">``.
  Its processing priority: header values supersede the file's, HTML metadata supersedes the
  header's, and an absent value never resets one found before.
- ``content_usage``: the IETF AI-preferences drafts. draft-ietf-aipref-vocab gives the
  vocabulary and its syntax (a Structured Field Dictionary, ``train-ai=n``);
  draft-ietf-aipref-attach carries it in the ``Content-Usage`` response header and in a
  robots.txt ``Content-Usage: [path] prefs`` rule, matched like Allow/Disallow (longest path
  wins; rules with the same path all apply).
- ``content_signal``: Cloudflare's Content Signals Policy, ``Content-Signal: search=yes,
  ai-train=no`` lines in a robots.txt user-agent group.
- ``ai_txt``: Spawning's ``/ai.txt``, robots.txt syntax (``Disallow: *.jpg``) addressed to AI
  training dataset builders.
- ``noai``: ``noai``, ``noimageai`` and ``noml`` in ``<meta name="robots">`` (or a meta named
  after our agent) and in ``X-Robots-Tag``.

When several apply, :func:`most_restrictive` picks one: any opt-out beats none, and among
opt-outs :data:`PRECEDENCE` orders them (all of them refuse the URL; the order only says
which one is recorded as the reason).
"""

from __future__ import annotations

import json
import logging
import string
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence
from urllib.parse import urlsplit

from parsel import Selector

from .extract import robots_directives
from common.records import Status
from .structured_fields import Item, StructuredFieldError, Token, parse_dictionary

log = logging.getLogger(__name__)

ROBOTS = Status.ROBOTS.value
NOAI = Status.NOAI.value
TDMREP = Status.TDMREP.value
CONTENT_USAGE = Status.CONTENT_USAGE.value
CONTENT_SIGNAL = Status.CONTENT_SIGNAL.value
AI_TXT = Status.AI_TXT.value

#: The order in which the recorded reason is chosen when several signals opt a URL out.
#: robots.txt access rules come first (the URL may not even be fetched); then the signals
#: made for rights reservations, the most formal first: TDMRep (a W3C report made for the
#: EU DSM directive's article 4), the IETF vocabulary, Cloudflare's Content Signals,
#: Spawning's ai.txt, and last the robots meta/header conventions (noai, noimageai, noml).
PRECEDENCE: tuple[str, ...] = (ROBOTS, TDMREP, CONTENT_USAGE, CONTENT_SIGNAL, AI_TXT, NOAI)

#: ``source`` values (where a signal was found).
SOURCE_ROBOTS = "robots.txt"
SOURCE_AI_TXT = "ai.txt"
SOURCE_TDMREP_FILE = "/.well-known/tdmrep.json"
SOURCE_TDM_HEADER = "tdm-reservation header"
SOURCE_TDM_META = "meta tdm-reservation"
SOURCE_CONTENT_USAGE_HEADER = "Content-Usage header"
SOURCE_X_ROBOTS_TAG = "X-Robots-Tag"
SOURCE_META_ROBOTS = "meta robots"

NOAI_DIRECTIVES = frozenset({"noai", "noimageai", "noml"})

#: IETF vocabulary labels read for capcrawl's use, from the most specific to the broadest.
#: The current draft (-08) defines only ``train-ai`` (and ``search``, which does not cover
#: building a training set); earlier drafts nested ``train-genai`` in ``train-ai`` in
#: "automated processing" (``all``, later ``bots``), and before July 2025 spelled them
#: ``genai``, ``ai`` and ``tdm``. A more specific explicit preference overrides a broader
#: one (draft -02's rule). ``ai-use`` (AI inference in those drafts, not a broader category)
#: is read as forbidding too, as issue 13 asks.
TRAIN_GENAI_LABELS = ("train-genai", "genai")
TRAIN_AI_LABELS = ("train-ai", "ai")
AUTOMATED_LABELS = ("bots", "all", "tdm")
AI_USE_LABELS = ("ai-use",)
_CHAINS = (
    TRAIN_GENAI_LABELS + TRAIN_AI_LABELS + AUTOMATED_LABELS,  # training a generative model
    TRAIN_AI_LABELS + AUTOMATED_LABELS,  # training any other model
    AI_USE_LABELS,
)

#: Content Signals keys that forbid building a training set.
CONTENT_SIGNAL_KEYS = ("ai-train",)

@dataclass(frozen=True)
class OptOut:
    """Evidence that a URL is opted out: which signal, where it was found, what it said."""

    signal: str  # a Status value: robots, tdmrep, content_usage, content_signal, ai_txt, noai
    source: str  # e.g. "robots.txt", "X-Robots-Tag", "/.well-known/tdmrep.json"
    value: str  # the rule or field value as found

    def row_fields(self) -> dict[str, str]:
        """The crawl row's evidence columns."""
        return {"opt_out_signal": self.signal, "opt_out_source": self.source, "opt_out_value": self.value}

    def describe(self) -> str:
        return f"{self.source}: {self.value}"


def most_restrictive(*found: OptOut | None) -> OptOut | None:
    """The opt-out to record among ``found`` (None when there is none): see :data:`PRECEDENCE`."""
    present = [f for f in found if f is not None]
    if not present:
        return None
    return min(present, key=lambda f: PRECEDENCE.index(f.signal) if f.signal in PRECEDENCE else len(PRECEDENCE))


def agent_token(user_agent: str) -> str:
    """The product token robots.txt groups are matched on: ``capcrawl/0.1 (+...)`` -> ``capcrawl``."""
    return user_agent.split("/")[0].split()[0].lower() if user_agent.strip() else ""


# --- robots.txt paths --------------------------------------------------------------------

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_HEX = frozenset(string.hexdigits)


def normalise_path(text: str, url_side: bool = False) -> str:
    """Percent-encoding made comparable (RFC 9309 2.2.2, RFC 3986 6.2.2): unreserved
    characters decoded, other escapes upper-cased, non-ASCII and spaces encoded as UTF-8.

    On the URL side ``*`` and ``$`` are encoded too, so that only a pattern's own ``*`` and
    ``$`` are special and a pattern's ``%2A`` matches a literal ``*`` in the URL.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        pair = text[i + 1:i + 3]
        if ch == "%" and len(pair) == 2 and set(pair) <= _HEX:
            decoded = chr(int(pair, 16))
            out.append(decoded if decoded in _UNRESERVED else "%" + pair.upper())
            i += 3
            continue
        if ord(ch) > 0x7E or ord(ch) <= 0x20 or (url_side and ch in "*$"):
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8")))
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def url_path(url: str) -> str:
    """The part of a URL that robots.txt patterns match: path and query, normalised."""
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return normalise_path(path, url_side=True)


@dataclass(frozen=True)
class PathPattern:
    """A robots.txt path pattern (RFC 9309 2.2.3): a prefix, ``*`` for any characters, a final ``$`` for the end."""

    pattern: str

    @classmethod
    def parse(cls, raw: str) -> "PathPattern":
        raw = raw.strip()
        if not raw.startswith(("/", "*")):
            raw = "/" + raw  # "images/" or "x.jpg": paths start with "/" (as Google and Protego read them)
        return cls(normalise_path(raw))

    @property
    def length(self) -> int:
        """How specific the pattern is: its length in (encoded) characters."""
        return len(self.pattern)

    def matches(self, path: str) -> bool:
        """Whether ``path`` (from :func:`url_path`) starts with a match of the pattern."""
        pattern = self.pattern
        anchored = pattern.endswith("$")
        if anchored:
            pattern = pattern[:-1]
        parts = pattern.split("*")
        if not path.startswith(parts[0]):
            return False
        if len(parts) == 1:
            return not anchored or path == parts[0]
        pos = len(parts[0])
        for part in parts[1:-1]:
            found = path.find(part, pos)
            if found < 0:
                return False
            pos = found + len(part)
        last = parts[-1]
        if anchored:
            return len(path) - len(last) >= pos and path.endswith(last)
        return path.find(last, pos) >= 0


# --- robots.txt syntax (robots.txt and ai.txt) -----------------------------------------


@dataclass(frozen=True)
class RobotsLine:
    key: str  # lower-cased: "allow", "disallow", "content-usage", "content-signal", ...
    value: str
    text: str  # the line as found, comment and surrounding blanks removed


@dataclass
class RobotsGroup:
    agents: list[str]  # product tokens, lower-cased ("*" for everyone)
    lines: list[RobotsLine]


def parse_groups(text: str) -> list[RobotsGroup]:
    """User-agent groups of a robots.txt-syntax file (RFC 9309 2.2.1).

    A group is one or more user-agent lines followed by its rules; a user-agent line after
    a rule starts a new group. Lines before the first user-agent line, sitemap lines and
    lines without a colon belong to no group.
    """
    groups: list[RobotsGroup] = []
    current: RobotsGroup | None = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        key, colon, value = line.partition(":")
        if not colon:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "user-agent":
            if current is None or current.lines:
                current = RobotsGroup([], [])
                groups.append(current)
            current.agents.append(value.split("/")[0].strip().lower())
        elif key != "sitemap" and current is not None:
            current.lines.append(RobotsLine(key, value, line))
    return groups


def lines_for(groups: Iterable[RobotsGroup], agent: str) -> list[RobotsLine]:
    """The lines that apply to ``agent``: every group naming it (combined), else every ``*`` group."""
    groups = list(groups)
    own = [line for g in groups if agent.lower() in g.agents for line in g.lines]
    if own:
        return own
    return [line for g in groups if "*" in g.agents for line in g.lines]


@dataclass(frozen=True)
class ScopedRule:
    """A Content-Usage or Content-Signal rule: an optional path pattern and the preferences."""

    path: PathPattern | None  # None: the rule has no path and applies to every path
    prefs: str
    text: str

    @property
    def length(self) -> int:
        return self.path.length if self.path is not None else 0

    def applies(self, path: str) -> bool:
        return self.path is None or self.path.matches(path)


def scoped_rule(line: RobotsLine) -> ScopedRule:
    """Split ``[path] prefs`` (draft-ietf-aipref-attach 3.2: a value starting with ``/`` has a
    path, which ends at the first space or tab)."""
    value = line.value
    if value.startswith("/"):
        cut = next((i for i, c in enumerate(value) if c in " \t"), len(value))
        return ScopedRule(PathPattern.parse(value[:cut]), value[cut:].strip(), line.text)
    return ScopedRule(None, value, line.text)


def longest_matches(rules: Sequence[ScopedRule], path: str) -> list[ScopedRule]:
    """The rules that apply to ``path`` with the longest path among those that match."""
    hits = [r for r in rules if r.applies(path)]
    if not hits:
        return []
    longest = max(r.length for r in hits)
    return [r for r in hits if r.length == longest]


class AccessRules:
    """Allow/Disallow rules of one agent's groups, decided as RFC 9309 2.2.2 says: the
    longest matching pattern wins, and Allow wins a tie."""

    def __init__(self, lines: Iterable[RobotsLine]):
        self.rules: list[tuple[PathPattern, bool, str]] = [
            (PathPattern.parse(line.value), line.key == "allow", line.text)
            for line in lines
            if line.key in ("allow", "disallow") and line.value
        ]

    def disallowing_rule(self, url: str) -> str | None:
        """The Disallow line that refuses ``url`` (as found), or None when it is allowed."""
        path = url_path(url)
        best: tuple[int, bool, str] | None = None
        for pattern, allow, text in self.rules:
            if pattern.matches(path):
                candidate = (pattern.length, allow, text)
                if best is None or candidate[:2] > best[:2]:
                    best = candidate
        return None if best is None or best[1] else best[2]


class RobotsRules:
    """What robots.txt says to ``agent`` about usage: Content-Usage and Content-Signal rules.

    Access (Allow/Disallow) stays with Scrapy's robots.txt parser in
    ``crawler.upstream.RobotsMiddleware``; :meth:`disallowing_rule` only names the line
    that refused a URL, as evidence.
    """

    def __init__(self, text: str, agent: str):
        lines = lines_for(parse_groups(text), agent)
        self.access = AccessRules(lines)
        self.usage = [scoped_rule(line) for line in lines if line.key == "content-usage"]
        self.signals = [scoped_rule(line) for line in lines if line.key == "content-signal"]

    def content_usage(self, url: str) -> OptOut | None:
        """The Content-Usage rule that forbids AI training for ``url``, if any.

        The longest matching path decides; several rules with that path all apply and the
        most restrictive wins (draft-ietf-aipref-attach 3.1).
        """
        for rule in longest_matches(self.usage, url_path(url)):
            if forbidding_label(usage_preferences(rule.prefs)):
                return OptOut(CONTENT_USAGE, SOURCE_ROBOTS, rule.text)
        return None

    def content_signal(self, url: str) -> OptOut | None:
        """The Content-Signal line that says ``ai-train=no`` for ``url``, if any.

        Cloudflare's policy puts one line in a group with no path; a path written before the
        signals, as for Content-Usage, is read the same way (longest match).
        """
        for rule in longest_matches(self.signals, url_path(url)):
            if content_signal_forbids(content_signal_preferences(rule.prefs)):
                return OptOut(CONTENT_SIGNAL, SOURCE_ROBOTS, rule.text)
        return None

    def decision(self, url: str) -> OptOut | None:
        """The usage opt-out robots.txt states for ``url`` (None: none)."""
        return most_restrictive(self.content_usage(url), self.content_signal(url))

    def disallowing_rule(self, url: str) -> str | None:
        return self.access.disallowing_rule(url)


class AiTxtRules:
    """Spawning's ``/ai.txt``: robots.txt syntax, each Disallow an opt-out from AI training sets."""

    def __init__(self, text: str, agent: str):
        self.access = AccessRules(lines_for(parse_groups(text), agent))

    def decision(self, url: str) -> OptOut | None:
        rule = self.access.disallowing_rule(url)
        return OptOut(AI_TXT, SOURCE_AI_TXT, rule) if rule else None


# --- TDMRep --------------------------------------------------------------------------------


def tdm_reservation(value: object) -> int | None:
    """A ``tdm-reservation`` value: 1 reserved, 0 not reserved, None unset (TDMRep 2.1).

    The final report knows 0 and 1 and calls anything else a protocol error (unset). The
    earlier draft's 2 ("reserved, and a TDM policy is available") is read as 1, so that a
    file written for it still reserves its rights.
    """
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip() in ("0", "1", "2"):
        number = int(value.strip())
    else:
        return None
    return {0: 0, 1: 1, 2: 1}.get(number)


@dataclass(frozen=True)
class TdmRule:
    location: PathPattern
    reservation: int | None
    text: str  # the rule as found, as compact JSON


class TdmRepRules:
    """``/.well-known/tdmrep.json``: rules matched in order, the first match decides (TDMRep 3.1)."""

    def __init__(self, rules: list[TdmRule]):
        self.rules = rules

    @classmethod
    def parse(cls, text: str, where: str = SOURCE_TDMREP_FILE) -> "TdmRepRules":
        """Rules of a tdmrep.json; a file or rule that is not what the report describes is
        left out (logged), never an error."""
        try:
            data = json.loads(text)
        except ValueError as e:
            log.info("%s ignored: not JSON (%s)", where, e)
            return cls([])
        if not isinstance(data, list):
            log.info("%s ignored: not a JSON array of rules", where)
            return cls([])
        rules = []
        for index, entry in enumerate(data):
            if not isinstance(entry, dict) or not isinstance(entry.get("location"), str) or "tdm-reservation" not in entry:
                log.info("%s: rule %d ignored (a rule has a location string and a tdm-reservation)", where, index)
                continue
            text_form = json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
            rules.append(TdmRule(PathPattern.parse(entry["location"]), tdm_reservation(entry["tdm-reservation"]), text_form))
        return cls(rules)

    def decision(self, url: str) -> OptOut | None:
        path = url_path(url)
        for rule in self.rules:
            if rule.location.matches(path):
                return OptOut(TDMREP, SOURCE_TDMREP_FILE, rule.text) if rule.reservation == 1 else None
        return None


@dataclass(frozen=True)
class TdmDeclaration:
    """``tdm-reservation`` and ``tdm-policy`` as found in one place (a header pair or meta pair)."""

    reservation: int | None
    policy: str | None
    source: str
    raw: str

    def opt_out(self) -> OptOut | None:
        if self.reservation != 1:
            return None
        value = self.raw + (f" (tdm-policy: {self.policy})" if self.policy else "")
        return OptOut(TDMREP, self.source, value)


def tdm_declaration(reservations: Sequence[str], policies: Sequence[str], source: str) -> TdmDeclaration:
    """The first valid ``tdm-reservation`` among ``reservations`` with its policy, if any."""
    for raw in reservations:
        value = tdm_reservation(raw)
        if value is not None:
            return TdmDeclaration(value, policies[0].strip() if policies else None, source, raw.strip())
    return TdmDeclaration(None, None, source, "")


# --- preference vocabularies ---------------------------------------------------------------


def usage_preferences(text: str) -> dict[str, str]:
    """``{label: "y" | "n"}`` from an IETF AI-preference statement (draft-ietf-aipref-vocab 6-7).

    Only Token values ``y`` and ``n`` count; other values, parameters and unknown labels
    mean nothing, and a statement that does not parse says nothing at all.
    """
    try:
        members = parse_dictionary(text)
    except StructuredFieldError:
        return {}
    return {
        key: m.value.value
        for key, m in members.items()
        if isinstance(m, Item) and isinstance(m.value, Token) and m.value.value in ("y", "n")
    }


def forbidding_label(prefs: Mapping[str, str]) -> str | None:
    """The label whose ``n`` forbids AI training (None when none does); see :data:`_CHAINS`."""
    for chain in _CHAINS:
        decided = next((label for label in chain if label in prefs), None)
        if decided is not None and prefs[decided] == "n":
            return decided
    return None


def content_signal_preferences(text: str) -> dict[str, str]:
    """``{signal: value}`` from ``search=yes, ai-train=no`` (keys and values lower-cased)."""
    prefs: dict[str, str] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if eq and key.strip():
            prefs[key.strip().lower()] = value.strip().lower()
    return prefs


def content_signal_forbids(prefs: Mapping[str, str]) -> bool:
    """``ai-train=no`` (also ``n``): no training or fine-tuning of AI models."""
    return any(prefs.get(key) in ("no", "n") for key in CONTENT_SIGNAL_KEYS)


# --- headers and HTML metadata ---------------------------------------------------------------


def content_usage_opt_out(values: Sequence[str], source: str = SOURCE_CONTENT_USAGE_HEADER) -> OptOut | None:
    """Content-Usage field lines (combined as HTTP combines them) that forbid AI training."""
    if not values:
        return None
    combined = ", ".join(v.strip() for v in values)
    return OptOut(CONTENT_USAGE, source, combined) if forbidding_label(usage_preferences(combined)) else None


def robots_tag_opt_out(values: Sequence[str], source: str, agent: str | None = None) -> OptOut | None:
    """noai/noimageai/noml in robots meta contents or X-Robots-Tag values (for all, or for ``agent``)."""
    for value in values:
        if robots_directives(value, agent) & NOAI_DIRECTIVES:
            return OptOut(NOAI, source, value.strip())
    return None


def page_meta(html: Selector, agent: str) -> tuple[OptOut | None, TdmDeclaration]:
    """A page's ``<meta>`` opt-outs: noai/noimageai/noml (robots or our agent's name) and TDMRep."""
    robots: list[tuple[str, str]] = []
    tdm: dict[str, list[str]] = {"tdm-reservation": [], "tdm-policy": []}
    for meta in html.xpath("//meta[@name]"):
        name = (meta.attrib.get("name") or "").strip().lower()
        content = meta.attrib.get("content")
        if content is None:
            continue
        if name in ("robots", agent.lower()):
            robots.append((name, content))
        elif name in tdm:
            tdm[name].append(content)
    noai = None
    for name, content in robots:
        source = SOURCE_META_ROBOTS if name == "robots" else f"meta {name}"
        noai = noai or robots_tag_opt_out([content], source, agent)
    return noai, tdm_declaration(tdm["tdm-reservation"], tdm["tdm-policy"], SOURCE_TDM_META)


def response_opt_out(headers: Mapping[str, Sequence[str]], agent: str, html: Selector | None = None) -> OptOut | None:
    """The opt-out a response declares for itself: X-Robots-Tag, Content-Usage and TDMRep
    headers, and for a page (``html``) its meta tags. ``headers`` is keyed by lower-cased name.

    TDMRep's own priority holds between its header and its meta tag (the meta tag's value
    supersedes the header's); across different signals the most restrictive wins.
    """
    tdm = tdm_declaration(headers.get("tdm-reservation", ()), headers.get("tdm-policy", ()), SOURCE_TDM_HEADER)
    found = [
        robots_tag_opt_out(headers.get("x-robots-tag", ()), SOURCE_X_ROBOTS_TAG, agent),
        content_usage_opt_out(headers.get("content-usage", ())),
    ]
    if html is not None:
        meta_noai, meta_tdm = page_meta(html, agent)
        found.append(meta_noai)
        if meta_tdm.reservation is not None:
            tdm = meta_tdm
    found.append(tdm.opt_out())
    return most_restrictive(*found)


@dataclass
class SiteRules:
    """Everything a host says before any of its URLs is requested."""

    robots: RobotsRules | None = None
    ai_txt: AiTxtRules | None = None
    tdmrep: TdmRepRules | None = None

    @classmethod
    def from_texts(cls, agent: str, robots: str | None, ai_txt: str | None, tdmrep: str | None, host: str = "") -> "SiteRules":
        """Rules from the three files' texts (None: the file is absent or could not be read)."""
        return cls(
            RobotsRules(robots, agent) if robots else None,
            AiTxtRules(ai_txt, agent) if ai_txt else None,
            TdmRepRules.parse(tdmrep, f"{host}{SOURCE_TDMREP_FILE}") if tdmrep else None,
        )

    def decision(self, url: str) -> OptOut | None:
        """The opt-out that forbids requesting ``url`` at all (None: none)."""
        return most_restrictive(*(rules.decision(url) for rules in (self.robots, self.ai_txt, self.tdmrep) if rules is not None))
