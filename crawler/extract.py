"""What the spider reads from an HTML page: images with their text, licences, links, opt-outs.

Pure functions over a ``parsel.Selector``; no Scrapy objects, so they are tested directly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit

from lxml import etree
from parsel import Selector
from w3lib.url import safe_url_string

from common.text import clean_text

from . import licenses
from .captions import find_caption
from .chrome import chrome_reason, nav_link_targets
from .pagetext import CONTEXT_CHARS, TextRenderer, image_context
from .urls import join_url

OPT_OUT_DIRECTIVES = frozenset({"noai", "noimageai", "noml"})
#: Longest alt or title text kept: longer text is cut at a word boundary (an alt of tens of
#: thousands of characters is a page pasted into an attribute, not a caption).
ALT_CHARS = 1000


@dataclass
class ImageRef:
    """One image found on a page, with the text around it."""

    url: str
    alt: str | None = None  # None: no alt attribute; "": empty alt
    title_attr: str | None = None
    figcaption: str | None = None  # its caption in any known markup (crawler.captions), label dropped
    context: str | None = None  # the text nearest to it (crawler.pagetext.image_context), lines joined by "\n"
    license: str | None = None
    license_url: str | None = None
    license_source: str | None = None
    chrome: str | None = None  # why it looks like site chrome (crawler.chrome), None for content


@dataclass
class PageInfo:
    title: str | None = None
    opt_out: str | None = None  # the directive that opted the page's images out, if any
    license: str | None = None
    license_url: str | None = None
    license_source: str | None = None
    images: list[ImageRef] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    data_uris: int = 0  # inline data: images seen (never samples)


def _text(value: str | None, limit: int | None = None) -> str | None:
    """Whitespace collapsed (common.text.clean_text); None for absent or blank text."""
    return clean_text(value, limit) or None


_AGENT_PREFIX = re.compile(r"^\s*([A-Za-z][\w-]*)\s*:\s*(.*)$", re.S)


#: Directives written ``name: value``, which a bot-name prefix must not be mistaken for.
_VALUED_DIRECTIVES = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})


def robots_directives(value: str | None, agent: str | None = None) -> set[str]:
    """Lower-cased directives of a robots meta content or X-Robots-Tag value that apply to
    everyone, or to ``agent``.

    ``otherbot: noai`` applies to ``otherbot`` only, and a prefix holds for the directives after
    it up to the next one: ``googlebot: noindex, capcrawl: noai`` (what a proxy makes of two
    header lines, RFC 9110 5.3) says ``noai`` to capcrawl.
    """
    if not value:
        return set()
    found: set[str] = set()
    scope: str | None = None  # the bot the directives read now are for (None: everyone)
    for token in value.split(","):
        m = _AGENT_PREFIX.match(token)
        if m and m.group(1).lower() not in _VALUED_DIRECTIVES:
            scope, token = m.group(1).lower(), m.group(2)
        if scope is None or (agent is not None and scope == agent.lower()):
            found.update(d.lower() for d in token.split())
    return found


def opt_out_in(values: list[str], agent: str | None = None) -> str | None:
    """The first noai/noimageai/noml directive in any of ``values`` (for everyone, or for ``agent``)."""
    for v in values:
        hit = robots_directives(v, agent) & OPT_OUT_DIRECTIVES
        if hit:
            return sorted(hit)[0]
    return None


def parse_srcset(srcset: str | None) -> list[tuple[str, float, str]]:
    """``[(url, value, unit)]`` from a srcset, following the HTML parsing rules (URLs may hold
    commas). ``unit`` is ``"w"`` for a width descriptor (``800w`` -> 800) and ``"x"`` for a
    density one (``2x`` -> 2) or none (1x).
    """
    out: list[tuple[str, float, str]] = []
    text, i, n = srcset or "", 0, len(srcset or "")
    while i < n:
        while i < n and (text[i].isspace() or text[i] == ","):
            i += 1
        j = i
        while j < n and not text[j].isspace():
            j += 1
        url, i = text[i:j], j
        if not url:
            break
        descriptor = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            k = text.find(",", i)
            k = n if k < 0 else k
            descriptor, i = text[i:k].strip(), k + 1
        size, unit = 1.0, "x"
        if descriptor:
            d = descriptor.split()[0]
            try:
                size, unit = (float(d[:-1]), d[-1].lower()) if d[-1] in "wxWX" else (float(d), "x")
            except ValueError:
                size, unit = 1.0, "x"
        out.append((url, size, unit))
    return out


def largest_candidate(*srcsets: str | None, width: int | None = None, own: int = 0) -> str | None:
    """The URL of the largest candidate of some srcsets, placeholders (``data:``) left out.

    Width (``w``) and density (``x``) descriptors are compared like with like: with the
    ``<img>``'s layout ``width`` known, a density becomes pixels (2x at width 400 = 800w);
    without it, the unit of the first ``own`` srcsets (the ``<img>``'s own) decides where
    they have candidates, else width descriptors, which name pixels, win.
    """
    found = [[c for c in parse_srcset(s) if not c[0].startswith("data:")] for s in srcsets]
    cands = [c for group in found for c in group]
    if not cands:
        return None
    if width:
        return max(cands, key=lambda c: c[1] if c[2] == "w" else c[1] * width)[0]
    units = {c[2] for c in cands}
    if len(units) > 1:
        mine = {c[2] for group in found[:own] for c in group}
        unit = mine.pop() if len(mine) == 1 else "w"
        cands = [c for c in cands if c[2] == unit]
    return max(cands, key=lambda c: c[1])[0]


def _lower(attr: str) -> str:
    return f"translate({attr}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"


#: <meta> (by property or name, any case) naming the image a page shares itself with.
_SHARED_IMAGE_META = " or ".join(
    f"{_lower(a)}='{n}'" for n in ("og:image", "og:image:url", "og:image:secure_url", "twitter:image", "twitter:image:src")
    for a in ("@property", "@name")
)


def _has_rel(token: str) -> str:
    return f"contains(concat(' ', normalize-space(translate(@rel, 'LICENS', 'licens')), ' '), ' {token} ')"


def _figure_license(img: etree._Element, base: str) -> tuple[str | None, str | None]:
    hrefs = img.xpath(f"ancestor::figure[1]//a[{_has_rel('license')}]/@href")
    href = str(hrefs[0]) if hrefs else None
    if not href:
        return None, None
    url = join_url(base, href)
    if url is None:
        return None, None
    return licenses.spdx_from_url(url), url


def _set_license(ref: ImageRef, el: etree._Element, base: str, structured: dict, info: PageInfo) -> None:
    """An image's licence: its figure's rel=license link, else structured data naming its URL,
    else the page's."""
    lic, lurl = _figure_license(el, base)
    if lurl:
        ref.license, ref.license_url, ref.license_source = lic, lurl, "figure:a-rel"
    elif ref.url in structured:
        ref.license, ref.license_url, ref.license_source = structured[ref.url]
    else:
        ref.license, ref.license_url, ref.license_source = info.license, info.license_url, info.license_source


def _structured_image_licenses(sel: Selector, base: str) -> dict[str, tuple[str | None, str | None, str]]:
    """Image URL -> (spdx, license url, source) from JSON-LD and microdata ImageObjects."""
    found: dict[str, tuple[str | None, str | None, str]] = {}

    def visit(node: object) -> None:
        if isinstance(node, list):
            for n in node:
                visit(n)
        elif isinstance(node, dict):
            types = node.get("@type")
            types = types if isinstance(types, list) else [types]
            if "ImageObject" in types and node.get("license"):
                lic = node["license"]
                lic = lic.get("url") or lic.get("@id") if isinstance(lic, dict) else lic
                spdx, lurl = licenses.normalise(str(lic))
                for key in ("contentUrl", "url"):
                    if isinstance(node.get(key), str) and (url := join_url(base, node[key])):
                        found[url] = (spdx, lurl, "json-ld")
            for v in node.values():
                visit(v)

    for raw in sel.xpath("//script[@type='application/ld+json']/text()").getall():
        try:
            visit(json.loads(raw))
        except ValueError:
            continue
    for item in sel.xpath("//*[@itemscope][contains(@itemtype, 'ImageObject')]"):
        lic = item.xpath(".//*[@itemprop='license']/@href | .//*[@itemprop='license']/@content").get()
        if not lic:
            continue
        spdx, lurl = licenses.normalise((join_url(base, lic) or lic) if lic.startswith(("/", "http")) else lic)
        for u in item.xpath(
            ".//*[@itemprop='contentUrl']/@src | .//*[@itemprop='contentUrl']/@href"
            " | .//*[@itemprop='contentUrl']/@content | .//img[@itemprop='image']/@src"
        ).getall():
            if url := join_url(base, u):
                found[url] = (spdx, lurl, "microdata")
    return found


#: Types of a ``<picture>`` source that capcrawl decodes (Pillow); a source of another type
#: (image/jxl, image/svg+xml) is skipped, as a browser that cannot show it skips it.
_DECODABLE_TYPES = frozenset({
    "image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/apng", "image/gif", "image/webp",
    "image/avif", "image/bmp", "image/tiff", "image/x-icon", "image/vnd.microsoft.icon",
})
#: Where lazy-loading scripts keep the real image: srcsets, then single URLs, ``src`` last.
_SRCSET_ATTRS = ("srcset", "data-srcset", "data-lazy-srcset")
_SRC_ATTRS = ("data-src", "data-lazy-src", "data-lazy", "data-original", "src")


def _image_url(img: Selector) -> str | None:
    """Best URL of an <img>: the largest srcset candidate (its own and its <picture>'s sources
    of a decodable type, lazy-loading attributes included, placeholders skipped), else the
    first real single URL."""
    srcsets = [img.attrib.get(a) for a in _SRCSET_ATTRS]
    for source in img.xpath("ancestor::picture[1]//source"):  # libxml2 nests <source>s (void in HTML)
        kind = (source.attrib.get("type") or "").split(";")[0].strip().lower()
        if not kind or kind in _DECODABLE_TYPES:
            srcsets += [source.attrib.get(a) for a in _SRCSET_ATTRS]
    width = img.attrib.get("width", "").strip()
    best = largest_candidate(*srcsets, width=int(width) if width.isdigit() and int(width) > 0 else None, own=len(_SRCSET_ATTRS))
    if best:
        return best
    for attr in _SRC_ATTRS:
        v = (img.attrib.get(attr) or "").strip()
        if v and not v.startswith("data:"):
            return v
    return (img.attrib.get("src") or "").strip() or None


#: Inert or hidden markup: a browser shows no image inside it (``<noscript>`` fallbacks are
#: kept: they name the real image of a lazy-loading one, and one URL is one image).
_INERT = "ancestor::template"
#: An inline style's background declaration, and each ``url(...)`` in it (quotes optional;
#: a declaration may list several layers).
_CSS_BACKGROUND = re.compile(r"""background(?:-image)?\s*:((?:[^;(]|\([^)]*\))*)""", re.I | re.S)
_CSS_URL = re.compile(r"""url\(\s*(['"]?)(.*?)\1\s*\)""", re.I | re.S)
#: File names that an <object>/<embed> without a type is taken as an image for.
_IMAGE_FILE = re.compile(r"\.(?:jpe?g|png|gif|webp|avif|bmp|tiff?|svg)(?:[?#]|$)", re.I)


#: The path of a link to an image file: its last segment ends in a raster image extension and
#: holds no colon (MediaWiki's ``/wiki/File:Fox.jpg`` is the file's description page).
_LINKED_IMAGE_PATH = re.compile(r"(?:^|/)[^/:]+\.(?:jpe?g|jfif|png|gif|webp|avif|bmp|tiff?)$", re.I)


def is_image_link(url: str) -> bool:
    """True for a URL whose path names a raster image file (a link to it is fetched as an image)."""
    return bool(_LINKED_IMAGE_PATH.search(urlsplit(url).path))


def _linked_alt(link: etree._Element) -> str | None:
    """The alt text of the one ``<img>`` a link wraps (a thumbnail names the picture it opens)."""
    imgs = link.findall(".//img")
    if len(imgs) == 1 and (alt := (imgs[0].get("alt") or "").strip()):
        return alt
    return None


def _image_elements(sel: Selector):
    """``(element, raw url, alt, title)`` of every image a browser would show, in document order.

    ``<img>`` (srcset, ``<picture>`` and lazy-loading attributes read), SVG ``<image>``,
    ``<object>``/``<embed>`` of an image type or file name, ``<video>`` posters and
    inline-style CSS backgrounds;
    nothing inside ``<template>``. Only an ``<img>`` has alt text.
    """
    query = (
        f"//img[not({_INERT})]"
        f" | //*[local-name()='image'][not({_INERT})]"
        f" | //object[@data][not({_INERT})] | //embed[@src][not({_INERT})] | //video[@poster][not({_INERT})]"
        f" | //*[@style][contains(translate(@style, 'URL', 'url'), 'url(')][not({_INERT})]"
    )
    for node in sel.xpath(query):
        el = node.root
        tag = el.tag if isinstance(el.tag, str) else ""
        title = el.get("title")
        if tag == "img":
            yield el, _image_url(node), el.get("alt"), title
        elif tag == "image" or tag.endswith(":image"):
            href = el.get("href") or next((v for k, v in el.attrib.items() if k.endswith("href")), None)
            yield el, (href or "").strip() or None, None, title
        elif tag == "video":  # its poster frame: the picture shown until it plays
            yield el, (el.get("poster") or "").strip() or None, None, title
        elif tag in ("object", "embed"):
            raw = (el.get("data") if tag == "object" else el.get("src")) or ""
            kind = (el.get("type") or "").strip().lower()
            if kind.startswith("image/") or (not kind and _IMAGE_FILE.search(raw)):
                yield el, raw.strip() or None, None, title
        for decl in _CSS_BACKGROUND.finditer(el.get("style") or ""):
            for m in _CSS_URL.finditer(decl.group(1)):
                yield el, m.group(2).strip() or None, None, title


def normalise_url(base: str, href: str, keep_unparsable: bool = False, encoding: str = "utf-8") -> str | None:
    """Absolute http(s) URL without fragment, percent-encoded, or None.

    A URL that cannot be parsed (``http://[::1``) is None too, or, with ``keep_unparsable``,
    ``href`` as written: an image's row then says ``bad_url`` instead of the image vanishing.
    ``encoding`` is the page's: as in a browser, the query is percent-encoded in it (the
    path always in UTF-8).
    """
    href = href.strip()
    if not href or href.startswith(("javascript:", "mailto:", "tel:", "#")):
        return None
    url = join_url(base, _backslashes_to_slashes(href), fragment=False)
    if url is None:
        return href if keep_unparsable else None
    if encoding.lower().replace("_", "-").startswith("utf-16"):
        encoding = "utf-8"  # WHATWG: a UTF-16 page's URLs are encoded in UTF-8
    try:
        # As a browser sends it (and Scrapy requests it): percent-encoded, host in lower case,
        # so that "a b.jpg" and "a%20b.jpg" are one image, recorded under one URL.
        try:
            url = safe_url_string(url, encoding=encoding)
        except UnicodeEncodeError:
            # A character the page's encoding lacks: a browser sends it as &#NNNN; (encoded).
            parts = urlsplit(url)
            query = "".join(c if _encodes(c, encoding) else quote(f"&#{ord(c)};", safe="") for c in parts.query)
            url = safe_url_string(urlunsplit(parts._replace(query=query)), encoding=encoding)
        except LookupError:
            url = safe_url_string(url)  # an encoding Python does not know
        scheme = urlsplit(url).scheme
    except ValueError:
        return href if keep_unparsable else None
    if scheme not in ("http", "https"):
        return None
    # RFC 3986 6.2.2.1: %c3%a9 and %C3%A9 are one URL (and Scrapy sends the upper-case form).
    return _PERCENT_ESCAPE.sub(lambda m: m.group(0).upper(), url) if "%" in url else url


_PERCENT_ESCAPE = re.compile(r"%[0-9a-fA-F]{2}")


def _encodes(char: str, encoding: str) -> bool:
    try:
        char.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def _backslashes_to_slashes(href: str) -> str:
    """Backslashes before the query are slashes in an http(s) URL (WHATWG), as browsers read
    ``src="\\img\\a.jpg"``: ``/img/a.jpg``."""
    if "\\" not in href:
        return href
    scheme = href.split(":", 1)[0].lower() if ":" in href.split("/", 1)[0].split("\\", 1)[0] else ""
    if scheme not in ("", "http", "https"):
        return href
    cut = min((i for i in (href.find("?"), href.find("#")) if i >= 0), default=len(href))
    return href[:cut].replace("\\", "/") + href[cut:]


def extract_page(html: str | Selector, page_url: str, agent_token: str = "capcrawl", encoding: str = "utf-8") -> PageInfo:
    """Read images, licences, links and noai/noimageai opt-outs from one HTML page (decoded from
    ``encoding``, which the URLs' queries are encoded in)."""
    sel = html if isinstance(html, Selector) else Selector(text=html, type="html")
    base = sel.xpath("//base/@href").get()
    base = (join_url(page_url, base) or page_url) if base else page_url
    info = PageInfo(title=_text(sel.xpath("//title/text()").get()))

    metas = sel.xpath(
        f"//meta[translate(@name, 'ROBTS', 'robts')='robots' or {_lower('@name')}='{agent_token.lower()}']/@content"
    ).getall()
    info.opt_out = opt_out_in(metas)

    href = sel.xpath(f"//a[{_has_rel('license')}][not(ancestor::figure)]/@href").get()
    source = "page:a-rel"
    if not href:
        href, source = sel.xpath(f"//link[{_has_rel('license')}]/@href").get(), "page:link-rel"
    if href and (license_url := join_url(base, href)):
        info.license_url = license_url
        info.license = licenses.spdx_from_url(license_url)
        info.license_source = source

    structured = _structured_image_licenses(sel, base)
    renderer, context_renderer = TextRenderer(), TextRenderer(blank_figures=True)
    nav_targets = nav_link_targets(sel.root, base)
    found = list(_image_elements(sel))
    # A CSS or <object> copy of an <img> adds nothing, wherever it stands: the <img> has the alt.
    img_urls = {normalise_url(base, raw, encoding=encoding) for el, raw, _, _ in found if el.tag == "img" and raw}

    def image_ref(el: etree._Element, url: str, alt: str | None, title: str | None,
                  caption: tuple[str, str] | None, own_text: str | None = None) -> ImageRef:
        """The row of one image found at ``el``: its texts cleaned and cut, its licence."""
        ref = ImageRef(
            url=url,
            alt=None if alt is None else clean_text(alt, ALT_CHARS),
            title_attr=_text(title, ALT_CHARS),
            figcaption=caption[0] if caption else None,
            context=image_context(el, context_renderer, own_text=own_text),
            chrome=chrome_reason(el, nav_targets, base, renderer),
        )
        _set_license(ref, el, base, structured, info)
        return ref

    seen_images: set[str] = set()
    first_img: dict[str, ImageRef] = {}
    for el, raw, alt, title in found:
        if not raw or raw.startswith("data:"):
            info.data_uris += 1 if raw else 0
            continue
        url = normalise_url(base, raw, keep_unparsable=True, encoding=encoding)
        if not url or (el.tag != "img" and (url in seen_images or url in img_urls)):
            continue
        seen_images.add(url)
        caption = find_caption(el, renderer)
        if (earlier := first_img.get(url)) is not None:
            # The same image again (a lazy <img> and its <noscript> fallback, most often): the
            # spider keeps the first, which takes the words it lacks from this one.
            if not earlier.alt and alt and alt.strip():
                earlier.alt = clean_text(alt, ALT_CHARS)
            earlier.title_attr = earlier.title_attr or _text(title, ALT_CHARS)
            earlier.figcaption = earlier.figcaption or (caption[0] if caption else None)
        ref = image_ref(el, url, alt, title, caption)
        info.images.append(ref)
        if el.tag == "img":
            first_img.setdefault(url, ref)

    # Links to image files: a gallery's "full size" behind its thumbnail, a directory listing.
    # Fetched as images (never followed as pages); dedup keeps the larger of a thumbnail and its
    # original when both pass (shards.dedup: larger area first, licence and score being equal).
    for node in sel.xpath(f"//a[@href][not({_INERT})]"):
        el = node.root
        url = normalise_url(base, el.get("href") or "", encoding=encoding)
        if not url or url in seen_images or not is_image_link(url):
            continue
        seen_images.add(url)
        info.images.append(image_ref(el, url, _linked_alt(el), el.get("title"), find_caption(el, renderer),
                                     own_text=renderer.text(el, lines=False)))

    # The image a page shares itself with: Open Graph (og:image, og:image:url/secure_url), X's
    # twitter:image (often the same URL) and the older <link rel="image_src">.
    shared = sel.xpath(f"//meta[{_SHARED_IMAGE_META}]/@content | //link[{_has_rel('image_src')}]/@href").getall()
    for og in shared:
        url = normalise_url(base, og, keep_unparsable=True, encoding=encoding)
        if url and url not in seen_images:  # every image taken above is in it
            seen_images.add(url)
            lic = structured.get(url, (info.license, info.license_url, info.license_source))
            desc = _text(sel.xpath("//meta[@property='og:description']/@content").get(), CONTEXT_CHARS)
            info.images.append(ImageRef(url=url, context=desc, license=lic[0], license_url=lic[1], license_source=lic[2]))

    seen: set[str] = set()
    for h in sel.xpath("//a/@href").getall():
        url = normalise_url(base, h, keep_unparsable=True, encoding=encoding)  # the crawl counts it as a bad_url page
        if url and url not in seen:
            seen.add(url)
            info.links.append(url)
    return info
