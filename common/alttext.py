"""Whether an alt text describes nothing: boilerplate that should count as no alt.

``boilerplate_alt(alt)`` returns the reason, or None for an alt that names something. It
flags the alt as a whole, never a word inside it: "image" is boilerplate, "an image of a
red circle" is not. Short real alts stay real: "Blur", next to a screenshot of the Blur
dialog, names its subject (one word, but the right one); whether it fits the picture is the
CLIP filter's question (``alt_score``), not this one's. Words that only say which role a
picture plays on the page ("Example", "Result", "Original image", "Before"), seen by the
dozen on the GIMP manual, are flagged: they name no subject.
"""

from __future__ import annotations

import re

_IMAGE_EXT = r"(?:jpe?g|jpe|jfif|png|gif|webp|svg|bmp|tiff?|avif|heic|heif|ico)"
#: A path or a file name, one word or a few ("beach day 2.jpg"); a sentence that ends in an
#: extension ("How to save a photo as .webp") has a space before the dot and is no file name.
_FILE_NAME = re.compile(
    rf"^(?:\S*[/\\])?[^/\\\s]+\.{_IMAGE_EXT}$|^(?=.{{1,60}}$)(?:[\w\-.()]+ ){{0,4}}[\w\-.()]*[\w\-()]\.{_IMAGE_EXT}$", re.I
)
_DEVICE_NAME = re.compile(
    r"^(?:img|dsc|dscn|dscf|dcim|pxl|mvimg|gopr|gopro|dji|sam|pict?|cimg|wp|imag|scan|screenshot|screen ?shot|"
    r"capture|snapshot)[ _-]?\d[\d_. -]*(?:at [\d.]+)?$",
    re.I,
)
_HASH = re.compile(r"^(?:[0-9a-f]{16,}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$", re.I)
_BRACKETED = re.compile(r"^(?:\[[^\[\]]{0,30}\]|\{[^{}]{0,30}\})$")
_NUMBERED = re.compile(r"(?:[\s_-]*[#(]?\d+\)?|\s+[#(]?[ivx]{1,4}\)?)$", re.I)
_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.I)
_EDGE_PUNCT = re.compile(r"^[\W_]+|[\W_]+$")

GENERIC_WORDS = frozenset({
    "image", "images", "img", "photo", "photos", "photograph", "picture", "pictures", "pic", "pics", "graphic",
    "graphics", "illustration", "figure", "fig", "logo", "icon", "spacer", "blank", "pixel", "placeholder",
    "thumbnail", "thumb", "banner", "screenshot", "screen shot", "screen capture", "untitled", "untitled image",
    "no image", "alt", "alt text", "image description", "description", "null", "none", "undefined", "default",
    "image of", "picture of", "photo of", "insert image", "click here", "click to enlarge", "enlarge", "zoom",
    "button", "bullet", "arrow", "separator", "divider", "dot", "clear", "transparent", "spacer image",
    "spacer gif", "featured image", "header image", "image placeholder", "loading", "lazy",
})
ROLE_WORDS = frozenset({
    "example", "examples", "sample", "samples", "result", "results", "original", "original image", "before",
    "after", "preview", "demo", "output", "input",
})
NAVIGATION_WORDS = frozenset({
    "prev", "previous", "next", "up", "home", "back", "top", "back to top", "go to top", "scroll to top",
    "forward", "first", "last", "start", "contents", "table of contents", "toc", "index", "menu", "search",
    "close", "more", "read more", "continue", "go", "rss", "feed", "skip", "previous page", "next page",
    "home page", "homepage", "up one level",
})


def _words(alt: str) -> str:
    """Lower case, edge punctuation and a leading article dropped, spaces collapsed."""
    text = _EDGE_PUNCT.sub("", " ".join(alt.split()).lower())
    return _ARTICLE.sub("", text)


def boilerplate_alt(alt: str | None) -> str | None:
    """Why ``alt`` describes nothing (a reason string), or None for a real alt.

    None and "" are None here: absent and empty (decorative) alts are their own cases.
    Reasons: ``no words``, ``number``, ``file name``, ``bracketed label``, ``navigation word``,
    ``generic word``, ``role word``.
    """
    if alt is None:
        return None
    text = " ".join(alt.split())
    if not text:
        return None
    if not any(c.isalnum() for c in text):
        return "no words"
    if not any(c.isalpha() for c in text):
        return "number"
    if _FILE_NAME.match(text) or _DEVICE_NAME.match(text) or _HASH.match(text):
        return "file name"
    if _BRACKETED.match(text):
        return "bracketed label"
    words = _words(text)
    if words in NAVIGATION_WORDS:
        return "navigation word"
    base = _EDGE_PUNCT.sub("", _NUMBERED.sub("", words))
    if words in GENERIC_WORDS or base in GENERIC_WORDS:
        return "generic word"
    if words in ROLE_WORDS or base in ROLE_WORDS:
        return "role word"
    return None
