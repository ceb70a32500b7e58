"""Text of an HTML tree as a browser renders it, and the text nearest to an image.

Pure functions over lxml elements (``Selector.root``). Rendering follows what a reader
sees (``innerText`` without CSS): inline elements add no space, block elements and
``<br>`` separate lines, whitespace collapses, ``<script>``/``<style>``/``<noscript>``/
``hidden`` elements and Sphinx-style ``¶`` permalinks are not text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lxml import etree

CONTEXT_CHARS = 400
MAX_LEVELS = 8  # how many enclosing blocks the context search widens through

BREAK = "\n"  # a line boundary in rendered text (block edges, <br>)
MARK = "\x00"  # where the image (or the block already searched) sits

BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details", "dialog",
    "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "frameset",
    "h1", "h2", "h3", "h4", "h5", "h6", "header", "hgroup", "hr", "html", "legend", "li", "main",
    "menu", "nav", "ol", "optgroup", "option", "p", "pre", "section", "summary", "table", "tbody",
    "td", "tfoot", "th", "thead", "tr", "ul",
})
SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "head", "title", "iframe", "object"})
SKIPPED_CLASSES = frozenset({"headerlink"})  # Sphinx/MkDocs "¶" permalinks, shown on hover only
# containers whose text is the caption of the images inside them (see crawler.captions)
FIGURE_CLASSES = frozenset({"figure", "informalfigure", "mediaobject", "equation", "wp-caption", "gallery-item",
                            "thumb", "thumbinner", "gallerybox", "wp-block-image"})
_WS = re.compile(r"[ \t\n\r\f\v\u00a0\u200b]+")
_SPACES = re.compile(r" +")
_LINES = re.compile(r" *\n[ \n]*")


def tag_of(el: etree._Element) -> str:
    """Lower-case local tag name; "" for comments and processing instructions."""
    tag = el.tag
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1].lower()


def is_block(el: etree._Element) -> bool:
    return tag_of(el) in BLOCK_TAGS


def class_tokens(el: etree._Element) -> set[str]:
    return set((el.get("class") or "").split())


def _skipped(el: etree._Element) -> bool:
    tag = tag_of(el)
    return (not tag or tag in SKIPPED_TAGS or el.get("hidden") is not None
            or bool(class_tokens(el) & SKIPPED_CLASSES))


def meaningful(text: str | None) -> bool:
    """True when ``text`` holds a letter or a digit (not only punctuation, symbols or space)."""
    return bool(text) and any(c.isalnum() for c in text)


def is_image_figure(el: etree._Element) -> bool:
    """A figure-like container (``figure``, ``[role=figure]``, DocBook/WordPress/MediaWiki
    figure classes) that holds an image: its text is that image's caption."""
    if not (tag_of(el) == "figure" or el.get("role") == "figure" or class_tokens(el) & FIGURE_CLASSES):
        return False
    return next(el.iter("img"), None) is not None


@dataclass
class TextRenderer:
    """Renders elements of one page; caches the rendering of every element it has seen.

    Rendered strings use ``BREAK`` for line boundaries and single spaces inside lines;
    ``finish`` tidies them. One renderer serves one page (elements are cache keys). With
    ``blank_figures`` (for image_context), figure-like containers of *other* images (those
    off the marked image's path) render as an empty line: their text is their caption.
    """

    blank_figures: bool = False
    _cache: dict[etree._Element, str] = field(default_factory=dict)

    def raw(self, el: etree._Element, mark: etree._Element | None = None,
            path: frozenset[etree._Element] = frozenset(), pre: bool = False) -> str:
        """Rendered text of ``el``; ``mark`` (a descendant) is replaced by ``MARK``.

        ``path`` holds the ancestors of ``mark``, which are rendered afresh (not cached).
        Inside ``<pre>`` (``pre``) a newline is a line break, as a browser shows it: a
        directory listing's or a table-like ``<pre>``'s entries are lines of their own.
        """
        if el is mark:
            return (BREAK + MARK + BREAK) if is_block(el) else MARK
        if _skipped(el) and el not in path:  # an image inside <noscript> still has its place
            return ""
        if mark is None or el not in path:
            cached = self._cache.get(el)
            if cached is not None:
                return cached
        tag = tag_of(el)
        if tag == "br" or (self.blank_figures and el not in path and is_image_figure(el)):
            out = BREAK
        else:
            pre = pre or tag == "pre"
            parts = [_spaces(el.text, pre) if el.text else ""]
            for child in el:
                parts.append(self.raw(child, mark, path, pre))
                if child.tail:
                    parts.append(_spaces(child.tail, pre))
            out = "".join(parts)
            if tag in BLOCK_TAGS:
                out = BREAK + out + BREAK
        if mark is None or el not in path:
            self._cache[el] = out
        return out

    def text(self, el: etree._Element, lines: bool = True) -> str | None:
        """Rendered text of ``el``: lines joined by "\\n" (or by spaces with ``lines=False``)."""
        return finish(self.raw(el), lines)


def _spaces(text: str, pre: bool) -> str:
    """Whitespace runs as one space; inside ``<pre>``, newlines kept as line breaks."""
    if pre and "\n" in text:
        return BREAK.join(_WS.sub(" ", line) for line in text.split("\n"))
    return _WS.sub(" ", text)


def finish(raw: str, lines: bool = True) -> str | None:
    """Tidy a rendered string: collapse spaces, drop empty lines; None when nothing is left."""
    text = _LINES.sub("\n", _SPACES.sub(" ", raw)).strip(" \n")
    if not lines:
        text = text.replace("\n", " ")
    return text or None


def cut(text: str, limit: int, keep_end: bool = False) -> str:
    """At most ``limit`` characters of ``text``, cut at a word boundary; its start is kept,
    or its end with ``keep_end``."""
    if len(text) <= limit:
        return text
    if keep_end:
        piece = text[len(text) - limit:]
        if not text[len(text) - limit - 1].isspace() and " " in piece:
            piece = piece.split(" ", 1)[1]  # drop the word cut in two
        return piece.strip()
    piece = text[:limit]
    if not text[limit].isspace() and " " in piece:
        piece = piece.rsplit(" ", 1)[0]
    return piece.strip()


def window(before: str, after: str, sep: str, limit: int = CONTEXT_CHARS) -> str | None:
    """``before + sep + after`` within ``limit`` chars, keeping the parts nearest the join:
    the end of ``before`` and the start of ``after``, half the room each (unused room goes
    to the other side)."""
    before, after = before.strip(), after.strip()
    if not before or not after:
        return cut(before or after, limit, keep_end=bool(before)) or None
    room = limit - len(sep)
    if len(before) + len(after) <= room:
        return before + sep + after
    half = room // 2
    if len(before) < half:
        return before + sep + cut(after, room - len(before))
    if len(after) < half:
        return cut(before, room - len(after), keep_end=True) + sep + after
    return cut(before, half, keep_end=True) + sep + cut(after, room - half)


def _lines(raw: str) -> list[str]:
    return [line.strip() for line in _SPACES.sub(" ", raw).split(BREAK)]


def image_context(img: etree._Element, renderer: TextRenderer, limit: int = CONTEXT_CHARS,
                  own_text: str | None = None) -> str | None:
    """The text nearest to ``img``, at most ``limit`` chars; None when the page has none.

    1. The image's own line: the text of the inline run it sits in, within its nearest
       block (the paragraph it is in, an icon's label): the window around the image, with
       ``own_text`` in the image's place (a link's words, where a link names the image).
    2. Else the nearest lines before and after it inside that block with words in them
       (a caption below, a title above, the sibling paragraphs), joined by "\\n".
    3. Else the same one block up (the block already searched counts as empty), and so
       on through at most ``MAX_LEVELS`` enclosing blocks, never above ``<body>``.
    """
    node = img
    parent = img.getparent()
    while parent is not None and not is_block(parent) and tag_of(parent) != "body":
        parent = parent.getparent()
    for _ in range(MAX_LEVELS):
        if parent is None or tag_of(parent) == "html":
            return None
        path = frozenset(node.iterancestors()) if node is img else frozenset({parent})
        lines = _lines(renderer.raw(parent, mark=node, path=path))
        at = next((i for i, line in enumerate(lines) if MARK in line), None)
        if at is None:  # defensive: every element of the tree renders its mark
            return None
        before, _, after = lines[at].partition(MARK)
        if own_text and node is img:
            before += own_text
        if meaningful(before + after):
            spaced = before.endswith(" ") or after.startswith(" ")
            return window(before, after, " " if spaced else "", limit)
        prev = next((line for line in reversed(lines[:at]) if meaningful(line)), "")
        nxt = next((line for line in lines[at + 1:] if meaningful(line)), "")
        if prev or nxt:
            return window(prev, nxt, "\n", limit)
        if tag_of(parent) == "body":
            return None
        node, parent = parent, parent.getparent()
    return None
