"""The caption of an image, in the markup of the generators that write most of the web.

Each rule names a container that holds an image and its caption, and where in it the
caption sits. They were modelled on the generators' own output or source:

- ``html5``: ``figure`` -> its own ``figcaption`` (not a nested figure's), Sphinx's
  ``span.caption-text`` inside it preferred. HTML5; Sphinx 5.3 (docutils HTML5 writer);
  WordPress 6.1 image block (``figcaption.wp-element-caption``) and ``[caption]`` with html5
  support (``figcaption.wp-caption-text``); MediaWiki 1.39 ``figure[typeof~=mw:File]``;
  Bootstrap 5 ``figcaption.figure-caption``.
- ``docbook-mediaobject``: ``div.mediaobject`` -> child ``div.caption`` (DocBook XSL 1.79
  graphics.xsl, e.g. gimp-help 2.10; also inside ``div.informalfigure``).
- ``docbook-title``: ``div.figure``, ``div.informalfigure``, ``div.example``, ``div.equation`` ->
  child ``p.title`` (``div.figure-title`` with make.clean.html), before or after the
  contents (DocBook XSL formal.xsl, ``formal.object.heading``).
- ``sphinx-old``: ``div.figure`` -> child ``p.caption``, ``span.caption-text`` preferred
  (docutils < 0.18 and the html4css1 writer).
- ``bootstrap``: ``.figure`` -> ``.figure-caption`` (Bootstrap 5 docs, content/figures.md).
- ``wordpress``: ``.wp-caption`` or ``.gallery-item`` -> ``.wp-caption-text`` (``p``, ``dd`` or
  ``figcaption``; WordPress 6.1 wp-includes/media.php, img_caption_shortcode and
  gallery_shortcode).
- ``mediawiki-thumb``: ``div.thumbinner`` -> child ``div.thumbcaption`` (MediaWiki 1.39
  Linker::makeThumbLink2, legacy media DOM).
- ``mediawiki-gallery``: ``li.gallerybox`` -> ``div.gallerytext`` (MediaWiki 1.39
  TraditionalImageGallery).
- ``aria``: the elements named by the image's ``aria-labelledby`` / ``aria-describedby``, or by
  those of an enclosing ``figure`` / ``[role=figure]`` (WAI-ARIA; WordPress's classic caption
  puts ``aria-describedby`` on the img, its html5 one on the figure).

The nearest container with a caption wins (a DocBook mediaobject's own caption before
the figure's title; a WordPress gallery image's caption before the gallery's). A
generated label ("Figure 17.2.", "Fig. 3:") that starts a caption is dropped.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

from lxml import etree

from .pagetext import TextRenderer, class_tokens, finish, meaningful, tag_of

_LABEL = re.compile(
    r"^(?:figure|fig|abbildung|abb|figura|figur|rysunek|illustration|image|plate|example|exhibit|chart|diagram|equation)\.?"
    r"\s*(?:\d+[a-z]?(?:[.\-]\d+[a-z]?)+\.?\s+|\d+[a-z]?\s*[.:|\u2013\u2014-]\s*)",
    re.I,
)


def strip_label(text: str) -> str:
    """``"Figure 17.2. Original for demo"`` -> ``"Original for demo"``; a caption that is only a
    label (or not one) is returned as it is."""
    m = _LABEL.match(text)
    if m and meaningful(text[m.end():]):
        return text[m.end():].strip()
    return text


def _children(el: etree._Element, cls: str, tags: Iterable[str] | None = None) -> list[etree._Element]:
    return [c for c in el if cls in class_tokens(c) and (tags is None or tag_of(c) in tags)]


def _descendants(el: etree._Element, cls: str) -> list[etree._Element]:
    return [d for d in el.iterdescendants() if cls in class_tokens(d)]


def _caption_text(el: etree._Element) -> etree._Element:
    """Sphinx's ``span.caption-text`` inside a caption when there is one (no "Fig. 1" number)."""
    inner = _descendants(el, "caption-text")
    return inner[0] if inner else el


def _own_figcaptions(fig: etree._Element) -> list[etree._Element]:
    """``figcaption`` elements whose nearest ``figure`` is ``fig`` (not a nested figure's)."""
    out = []
    for cap in fig.iterdescendants("figcaption"):
        owner = next((a for a in cap.iterancestors() if tag_of(a) == "figure"), None)
        if owner is fig:
            out.append(_caption_text(cap))
    return out


DOCBOOK_FORMAL = frozenset({"figure", "informalfigure", "example", "equation"})
DOCBOOK_TITLES = frozenset({"title", "figure-title", "example-title", "equation-title"})


def _docbook_title(el: etree._Element) -> list[etree._Element]:
    tokens = class_tokens(el)
    if tag_of(el) != "div" or not tokens & DOCBOOK_FORMAL:
        return []
    return [c for c in el if tag_of(c) in ("p", "div") and class_tokens(c) & DOCBOOK_TITLES]


def _sphinx_old(el: etree._Element) -> list[etree._Element]:
    if tag_of(el) != "div" or "figure" not in class_tokens(el):
        return []
    return [_caption_text(c) for c in _children(el, "caption", ("p", "div"))]


def _bootstrap(el: etree._Element) -> list[etree._Element]:
    return _descendants(el, "figure-caption") if "figure" in class_tokens(el) else []


def _wordpress(el: etree._Element) -> list[etree._Element]:
    if class_tokens(el) & {"wp-caption", "gallery-item"}:
        return _descendants(el, "wp-caption-text") or _descendants(el, "gallery-caption")
    return []


def _mediawiki_thumb(el: etree._Element) -> list[etree._Element]:
    return _children(el, "thumbcaption") if "thumbinner" in class_tokens(el) else []


def _mediawiki_gallery(el: etree._Element) -> list[etree._Element]:
    return _descendants(el, "gallerytext") if "gallerybox" in class_tokens(el) else []


def _docbook_mediaobject(el: etree._Element) -> list[etree._Element]:
    return _children(el, "caption", ("div",)) if "mediaobject" in class_tokens(el) else []


def _html5(el: etree._Element) -> list[etree._Element]:
    return _own_figcaptions(el) if tag_of(el) == "figure" else []


RULES: tuple[tuple[str, Callable[[etree._Element], list[etree._Element]]], ...] = (
    ("html5", _html5),
    ("docbook-mediaobject", _docbook_mediaobject),
    ("docbook-title", _docbook_title),
    ("sphinx-old", _sphinx_old),
    ("bootstrap", _bootstrap),
    ("wordpress", _wordpress),
    ("mediawiki-thumb", _mediawiki_thumb),
    ("mediawiki-gallery", _mediawiki_gallery),
)


def _by_ids(root: etree._Element, ids: str | None) -> list[etree._Element]:
    found = []
    for ident in (ids or "").split():
        found += root.xpath("//*[@id=$i]", i=ident)[:1]
    return found


def _text_of(elements: list[etree._Element], renderer: TextRenderer) -> str | None:
    if not elements:
        return None
    text = finish(" ".join(renderer.raw(e) for e in elements), lines=False)
    return text if meaningful(text) else None


def _aria(el: etree._Element, renderer: TextRenderer) -> str | None:
    root = el.getroottree().getroot()
    for attr in ("aria-labelledby", "aria-describedby"):
        text = _text_of(_by_ids(root, el.get(attr)), renderer)
        if text:
            return text
    return None


def find_caption(img: etree._Element, renderer: TextRenderer) -> tuple[str, str] | None:
    """``(caption, rule)`` for ``img``: the caption of its nearest captioned container, or
    the text its ARIA attributes point at; label prefixes dropped. None when there is none."""
    text = _aria(img, renderer)
    if text:
        return strip_label(text), "aria"
    for anc in img.iterancestors():
        if tag_of(anc) in ("body", "html"):
            break
        for name, rule in RULES:
            text = _text_of(rule(anc), renderer)
            if text:
                return strip_label(text), name
        if tag_of(anc) == "figure" or anc.get("role") == "figure":
            text = _aria(anc, renderer)
            if text:
                return strip_label(text), "aria"
    return None
