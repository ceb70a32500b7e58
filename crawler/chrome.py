"""Whether an image is part of the site's chrome (navigation, banners, footers, icons of
boxed notes) rather than of the page's content. Pure functions; nothing is dropped here:
the reason is recorded and the caller decides.

Reasons, checked from the image outwards (the nearest decides):

- ``link:prev`` (``next``, ``up``, ``home``, ...): the image is (inside) a link to the same URL
  as the page's ``<link rel=prev|next|up|...>`` (DocBook, Sphinx and MkDocs write both), or
  the link itself has such a ``rel``.
- ``nav``, ``aside``: inside that element (``aside`` only outside an ``article``).
- ``header``, ``footer``: inside the page's banner or footer; a ``header``/``footer`` inside
  ``article``, ``aside``, ``main``, ``nav`` or ``section`` is that section's, and counts not
  (the HTML-ARIA mapping of ``banner``/``contentinfo``).
- ``role:navigation`` (``banner``, ``contentinfo``, ``complementary``, ``menu``, ``menubar``,
  ``toolbar``, ``search``): inside an element with that ARIA role.
- ``class:navheader`` (...): inside an element whose class or id is one of a few names that
  generators and themes give their navigation (DocBook's ``navheader``/``navfooter``,
  ``navbar``, ``breadcrumb``, ``sidebar``, ``site-header``, ...).
- ``admonition``: the icon cell of a DocBook graphical admonition (``div.note`` etc. with
  an ``[Note]`` image in a cell that has no text).
"""

from __future__ import annotations


from lxml import etree

from .pagetext import TextRenderer, class_tokens, meaningful, tag_of
from .urls import join_url

NAV_RELS = ("prev", "previous", "next", "up", "home", "start", "first", "last", "contents", "index", "toc")
CHROME_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "menu", "menubar", "toolbar", "search"})
CHROME_NAMES = frozenset({
    "nav", "navbar", "navigation", "navheader", "navfooter", "breadcrumb", "breadcrumbs", "main-menu", "menubar",
    "sidebar", "site-header", "site-footer", "site-nav", "masthead", "pagination", "pager", "skip-link",
})
ADMONITIONS = frozenset({"note", "tip", "warning", "caution", "important"})
_SECTIONING = frozenset({"article", "aside", "main", "nav", "section"})


def nav_link_targets(root: etree._Element, base: str) -> dict[str, str]:
    """URL (no fragment) -> rel, from the page's ``<link rel=prev|next|up|home|...>``; a URL
    named by several rels (prev is often up too) gets the first of ``NAV_RELS``."""
    out: dict[str, str] = {}
    for link in root.iter("link"):
        href = (link.get("href") or "").strip()
        rels = [r for r in (link.get("rel") or "").lower().split() if r in NAV_RELS]
        if not href or not rels:
            continue
        url = join_url(base, href, fragment=False)
        if url is None:
            continue
        out[url] = min(rels + ([out[url]] if url in out else []), key=NAV_RELS.index)
    return {u: "prev" if r == "previous" else r for u, r in out.items()}


def _link_reason(a: etree._Element, nav_targets: dict[str, str], base: str) -> str | None:
    rels = (a.get("rel") or "").lower().split()
    rel = next((r for r in rels if r in NAV_RELS), None)
    if rel:
        return f"link:{'prev' if rel == 'previous' else rel}"
    href = (a.get("href") or "").strip()
    if href and not href.startswith("#"):
        target = nav_targets.get(join_url(base, href, fragment=False) or "")
        if target:
            return f"link:{target}"
    return None


def _scoped_to_page(el: etree._Element) -> bool:
    """A header/footer not inside article/aside/main/nav/section: the page's banner or footer."""
    return not any(tag_of(a) in _SECTIONING for a in el.iterancestors())


def _admonition_icon(img: etree._Element, anc: etree._Element, renderer: TextRenderer) -> bool:
    cell = next((a for a in img.iterancestors() if tag_of(a) in ("td", "th")), None)
    if cell is None or anc not in set(cell.iterancestors()):
        return False
    return not meaningful(renderer.text(cell))


def chrome_reason(img: etree._Element, nav_targets: dict[str, str], base: str,
                  renderer: TextRenderer | None = None) -> str | None:
    """Why ``img`` looks like site chrome (see the module's list), or None for content."""
    renderer = renderer or TextRenderer()
    for anc in img.iterancestors():
        tag = tag_of(anc)
        if tag in ("body", "html"):
            break
        if tag == "a":
            reason = _link_reason(anc, nav_targets, base)
            if reason:
                return reason
        if tag == "nav":
            return "nav"
        if tag == "aside" and not any(tag_of(a) == "article" for a in anc.iterancestors()):
            return "aside"
        if tag in ("header", "footer") and _scoped_to_page(anc):
            return tag
        role = (anc.get("role") or "").lower()
        if role in CHROME_ROLES:
            return f"role:{role}"
        names = class_tokens(anc) | {(anc.get("id") or "").lower()}
        hit = sorted(n.lower() for n in names if n.lower() in CHROME_NAMES)
        if hit:
            return f"class:{hit[0]}"
        if tag == "div" and class_tokens(anc) & ADMONITIONS and _admonition_icon(img, anc, renderer):
            return "admonition"
    return None
