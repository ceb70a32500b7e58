"""A parser for HTTP Structured Field Dictionaries (RFC 9651, section 4.2.2), no serialiser.

The IETF AI-preference vocabulary (draft-ietf-aipref-vocab) writes usage preferences as a
Structured Field Dictionary (``train-ai=n, search=y``): the ``Content-Usage`` response header
and the robots.txt ``Content-Usage`` rule (draft-ietf-aipref-attach) both carry one. Parsing
follows RFC 9651's algorithms, so that a value the draft calls unparsable (an upper-case key,
a trailing comma) fails as a whole, and the last of two equal keys wins.
"""

from __future__ import annotations

import base64
import string
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Union


class StructuredFieldError(ValueError):
    """The text is not a valid Structured Field of the type asked for."""


@dataclass(frozen=True)
class Token:
    """A Structured Field Token (``n``, ``y``, ``foo/bar``): kept apart from a String."""

    value: str


@dataclass(frozen=True)
class DisplayString:
    value: str


@dataclass(frozen=True)
class Date:
    seconds: int


BareItem = Union[int, Decimal, str, Token, bytes, bool, DisplayString, Date]


@dataclass
class Item:
    value: BareItem
    params: dict[str, BareItem] = field(default_factory=dict)


@dataclass
class InnerList:
    items: list[Item]
    params: dict[str, BareItem] = field(default_factory=dict)


_LCALPHA = set(string.ascii_lowercase)
_KEY_CHARS = _LCALPHA | set(string.digits) | set("_-.*")
_TCHAR = set(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~:/")
_B64 = set(string.ascii_letters + string.digits + "+/=")


class _Reader:
    """The input string and a position in it, as RFC 9651's algorithms consume it."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        ch = self.peek()
        self.pos += 1
        return ch

    def done(self) -> bool:
        return self.pos >= len(self.text)

    def skip(self, chars: str) -> None:
        while not self.done() and self.text[self.pos] in chars:
            self.pos += 1


def parse_dictionary(text: str) -> dict[str, Item | InnerList]:
    """The members of a Dictionary field value, in order; raises StructuredFieldError.

    ``text`` is the field value (several field lines combined with ``,`` first, as HTTP does).
    """
    if any(ord(c) > 0x7E or (ord(c) < 0x20 and c != "\t") for c in text):
        raise StructuredFieldError("a Structured Field is printable ASCII")
    r = _Reader(text.strip(" "))
    members: dict[str, Item | InnerList] = {}
    while not r.done():
        key = _key(r)
        if r.peek() == "=":
            r.take()
            member = _item_or_inner_list(r)
        else:
            member = Item(True, _parameters(r))
        members.pop(key, None)  # a repeated key: the last one wins, in the last one's place
        members[key] = member
        r.skip(" \t")
        if r.done():
            break
        if r.take() != ",":
            raise StructuredFieldError(f"expected ',' at {r.pos - 1} in {text!r}")
        r.skip(" \t")
        if r.done():
            raise StructuredFieldError("trailing comma")
    return members


def _key(r: _Reader) -> str:
    first = r.peek()
    if first not in _LCALPHA and first != "*":
        raise StructuredFieldError(f"a key starts with a-z or '*', got {first!r}")
    start = r.pos
    while not r.done() and r.peek() in _KEY_CHARS:
        r.pos += 1
    return r.text[start:r.pos]


def _parameters(r: _Reader) -> dict[str, BareItem]:
    params: dict[str, BareItem] = {}
    while r.peek() == ";":
        r.take()
        r.skip(" ")
        key = _key(r)
        value: BareItem = True
        if r.peek() == "=":
            r.take()
            value = _bare_item(r)
        params.pop(key, None)
        params[key] = value
    return params


def _item_or_inner_list(r: _Reader) -> Item | InnerList:
    if r.peek() == "(":
        return _inner_list(r)
    value = _bare_item(r)
    return Item(value, _parameters(r))


def _inner_list(r: _Reader) -> InnerList:
    r.take()  # "("
    items: list[Item] = []
    while not r.done():
        r.skip(" ")
        if r.peek() == ")":
            r.take()
            return InnerList(items, _parameters(r))
        value = _bare_item(r)
        items.append(Item(value, _parameters(r)))
        if r.peek() not in (" ", ")"):
            raise StructuredFieldError("inner list members are separated by spaces")
    raise StructuredFieldError("unterminated inner list")


def _bare_item(r: _Reader) -> BareItem:
    ch = r.peek()
    if ch == "-" or ch.isdigit():
        return _number(r)
    if ch == '"':
        return _string(r)
    if ch == "*" or (ch and ch in string.ascii_letters):
        return _token(r)
    if ch == ":":
        return _byte_sequence(r)
    if ch == "?":
        return _boolean(r)
    if ch == "@":
        r.take()
        number = _number(r)
        if not isinstance(number, int):
            raise StructuredFieldError("a Date is an integer")
        return Date(number)
    if ch == "%":
        return _display_string(r)
    raise StructuredFieldError(f"no item starts with {ch!r}")


def _number(r: _Reader) -> int | Decimal:
    start = r.pos
    if r.peek() == "-":
        r.take()
    if not r.peek().isdigit():
        raise StructuredFieldError("a number needs a digit")
    digits_start = r.pos
    while not r.done() and (r.peek().isdigit() or r.peek() == "."):
        r.pos += 1
    body = r.text[digits_start:r.pos]
    if "." not in body:
        if len(body) > 15:
            raise StructuredFieldError("an Integer has at most 15 digits")
        return int(r.text[start:r.pos])
    whole, _, frac = body.partition(".")
    if "." in frac or len(whole) > 12 or not 1 <= len(frac) <= 3:
        raise StructuredFieldError("a Decimal has at most 12 digits, a dot and 1 to 3 digits")
    return Decimal(r.text[start:r.pos])


def _string(r: _Reader) -> str:
    r.take()  # opening quote
    out = []
    while not r.done():
        ch = r.take()
        if ch == "\\":
            nxt = r.take()
            if nxt not in ('"', "\\"):
                raise StructuredFieldError("only \\\" and \\\\ are escapes in a String")
            out.append(nxt)
        elif ch == '"':
            return "".join(out)
        elif ord(ch) < 0x20 or ord(ch) > 0x7E:
            raise StructuredFieldError("a String is printable ASCII")
        else:
            out.append(ch)
    raise StructuredFieldError("unterminated String")


def _token(r: _Reader) -> Token:
    start = r.pos
    r.pos += 1
    while not r.done() and r.peek() in _TCHAR:
        r.pos += 1
    return Token(r.text[start:r.pos])


def _byte_sequence(r: _Reader) -> bytes:
    r.take()
    end = r.text.find(":", r.pos)
    if end < 0:
        raise StructuredFieldError("unterminated Byte Sequence")
    b64 = r.text[r.pos:end]
    r.pos = end + 1
    if not set(b64) <= _B64:
        raise StructuredFieldError("a Byte Sequence is base64")
    try:
        return base64.b64decode(b64 + "=" * (-len(b64) % 4))
    except ValueError as e:
        raise StructuredFieldError("a Byte Sequence is base64") from e


def _boolean(r: _Reader) -> bool:
    r.take()
    ch = r.take()
    if ch not in ("0", "1"):
        raise StructuredFieldError("a Boolean is ?0 or ?1")
    return ch == "1"


def _display_string(r: _Reader) -> DisplayString:
    r.take()
    if r.take() != '"':
        raise StructuredFieldError("a Display String starts with %\"")
    raw = bytearray()
    while not r.done():
        ch = r.take()
        if ch == "%":
            hexpair = r.text[r.pos:r.pos + 2]
            if len(hexpair) != 2 or not all(c in "0123456789abcdef" for c in hexpair):
                raise StructuredFieldError("a Display String escapes with two lower-case hex digits")
            raw.append(int(hexpair, 16))
            r.pos += 2
        elif ch == '"':
            try:
                return DisplayString(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise StructuredFieldError("a Display String is UTF-8") from e
        elif ord(ch) < 0x20 or ord(ch) > 0x7E:
            raise StructuredFieldError("a Display String is printable ASCII")
        else:
            raw.append(ord(ch))
    raise StructuredFieldError("unterminated Display String")
