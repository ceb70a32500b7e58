"""Text around images as real sites write it: captions in each generator's markup, context as a
browser renders it, boilerplate alts, site chrome.

The pages copy the structure (tags, class names, nesting) of real generated output, trimmed:
DocBook XSL 1.79 as in Debian's gimp-help-en 2.10.34, Sphinx 5.3 as in Debian's sphinx-doc,
docutils' older ``div.figure`` as found in published Sphinx sites, WordPress 6.1 from its PHP
and block-library source (Debian's wordpress package), MediaWiki 1.39 from Linker.php and
TraditionalImageGallery.php (Debian's mediawiki package), Bootstrap 5's figures docs.
"""

from __future__ import annotations

import pytest
from parsel import Selector

from common.alttext import boilerplate_alt
from crawler.captions import find_caption, strip_label
from crawler.extract import CONTEXT_CHARS, extract_page
from crawler.pagetext import TextRenderer, image_context

PAGE = "http://127.0.0.1:8765/docs/page.html"


def refs(body: str, head: str = "", url: str = PAGE) -> dict[str, object]:
    """Image file name -> ImageRef (its first occurrence, as the spider keeps) for a page with ``body``."""
    html = f"<!DOCTYPE html><html><head><title>t</title>{head}</head><body>{body}</body></html>"
    out: dict[str, object] = {}
    for r in extract_page(html, url).images:
        out.setdefault(r.url.rsplit("/", 1)[-1], r)
    return out


def rule_of(body: str, name: str) -> str | None:
    """The caption rule that matched the image ``name`` (None when no caption was found)."""
    sel = Selector(text=f"<html><body>{body}</body></html>", type="html")
    img = sel.xpath(f"//img[contains(@src, '{name}')]")[0]
    found = find_caption(img.root, TextRenderer())
    return found[1] if found else None


# --- captions, one test per generator's markup ------------------------------------------------

DOCBOOK_FIGURE = """
<div class="sect2"><div class="titlepage"><div><div>
  <h3 class="title"><a id="filters-blur-introduction"></a>3.1. Introduction</h3></div></div></div>
  <a id="idm35551" class="indexterm"></a>
  <div class="figure">
    <a id="idm35554"></a>
    <p class="title">
      <strong>Figure 17.2. Original for demo</strong>
    </p>
    <div class="figure-contents">
      <div class="mediaobject">
        <img src="images/filters/examples/blur-demo-orig.png" alt="Original for demo" />
      </div>
    </div>
  </div>
  <br class="figure-break" />
  <p>
    This is a set of filters that blur images, or parts of them,
    in various ways.
  </p>
</div>"""


def test_docbook_figure_title_is_the_caption():
    """gimp-help filters-blur.html: div.figure > p.title > strong, the image two divs down."""
    r = refs(DOCBOOK_FIGURE)["blur-demo-orig.png"]
    assert r.figcaption == "Original for demo"  # "Figure 17.2." is the generator's label
    assert r.context == "Figure 17.2. Original for demo"
    assert rule_of(DOCBOOK_FIGURE, "blur-demo-orig") == "docbook-title"


DOCBOOK_MEDIAOBJECT = """
<div class="variablelist"><dl class="variablelist">
  <dt><span class="term">Iterations</span></dt>
  <dd>
    <p>
      The number of noise octaves.
    </p>
    <div class="mediaobject">
      <img src="images/filters/examples/render/perlin_noise-iter.png" />
      <div class="caption">
        <p>
          Iterations = 7
        </p>
      </div>
    </div>
  </dd>
</dl></div>"""


def test_docbook_mediaobject_caption_short_as_it_is():
    """gimp-filter-noise-perlin.html: div.mediaobject > img + div.caption > p; a caption of
    14 characters is the caption and the context, not the list around it."""
    r = refs(DOCBOOK_MEDIAOBJECT)["perlin_noise-iter.png"]
    assert (r.alt, r.figcaption, r.context) == (None, "Iterations = 7", "Iterations = 7")
    assert rule_of(DOCBOOK_MEDIAOBJECT, "perlin_noise-iter") == "docbook-mediaobject"


DOCBOOK_INFORMALFIGURE = """
<div class="figure">
  <a id="quickie-flip-images"></a>
  <p class="title"><strong>Figure 3.36. Example Image to Flip</strong></p>
  <div class="figure-contents">
    <div class="informalfigure">
      <div class="mediaobject">
        <img src="images/tutorials/quickie-flip-example-source.jpg" alt="Example Image to Flip" />
        <div class="caption"><p>Source image</p></div>
      </div>
      <div class="mediaobject">
        <img src="images/tutorials/quickie-flip-example-horizontal.jpg" alt="Example Image to Flip" />
        <div class="caption"><p>Horizontal flipped image</p></div>
      </div>
    </div>
    <div class="informalfigure">
      <div class="mediaobject">
        <img src="images/tutorials/quickie-flip-example-vertical.jpg" alt="Example Image to Flip" />
      </div>
    </div>
  </div>
</div>
<br class="figure-break" />"""


def test_docbook_informalfigures_inside_a_figure_each_image_its_own_caption():
    """gimp-tutorial-quickie-flip.html: the nearest caption wins; an image without one gets the
    figure's title."""
    r = refs(DOCBOOK_INFORMALFIGURE)
    assert r["quickie-flip-example-source.jpg"].figcaption == "Source image"
    assert r["quickie-flip-example-horizontal.jpg"].figcaption == "Horizontal flipped image"
    assert r["quickie-flip-example-vertical.jpg"].figcaption == "Example Image to Flip"
    assert r["quickie-flip-example-vertical.jpg"].context == "Figure 3.36. Example Image to Flip"


def test_docbook_equation_title_and_clean_html_titles():
    """Formal objects other than figure (div.equation, as in gimp-help's layer-mode maths) and
    make.clean.html's div.figure-title, placed after the contents."""
    body = """
<div class="equation"><a id="layer-mode-normal-equation"></a>
  <p class="title"><strong>Equation 8.2. Equation for layer mode <span class="quote">“<span class="quote">Normal</span>”</span></strong></p>
  <div class="equation-contents"><div class="mediaobject"><img src="images/math/layer-mode-normal.png" /></div></div>
</div><br class="equation-break" />
<div class="figure" id="f2"><div class="figure-contents"><div class="mediaobject">
  <img src="after.png" alt="Title after" /></div></div>
  <div class="figure-title">Figure 2.1. Title after the picture</div>
</div>"""
    r = refs(body)
    assert r["layer-mode-normal.png"].figcaption == "Equation for layer mode “Normal”"
    assert r["after.png"].figcaption == "Title after the picture"


SPHINX_HTML5 = """
<section id="building-your-html-documentation">
<p>And finally, open <code class="docutils literal notranslate"><span class="pre">docs/build/html/index.html</span></code> in your browser.  You should see
something like this:</p>
<figure class="align-center" id="id2">
<a class="reference internal image-reference" href="../_images/lumache-first-light.png"><img alt="Freshly created documentation of Lumache" src="../_images/lumache-first-light.png" style="width: 80%;" /></a>
<figcaption>
<p><span class="caption-number">Fig. 1 </span><span class="caption-text">Freshly created documentation of Lumache</span><a class="headerlink" href="#id2" title="Permalink to this image">¶</a></p>
</figcaption>
</figure>
<p>There we go! You created your first HTML documentation using Sphinx.</p>
</section>"""


def test_sphinx_html5_figure_caption_text():
    """sphinx-doc 5.3 tutorial/getting-started.html: figure > figcaption > p > span.caption-text,
    without the caption number and the ¶ permalink."""
    r = refs(SPHINX_HTML5)["lumache-first-light.png"]
    assert r.figcaption == "Freshly created documentation of Lumache"
    assert r.context == "Fig. 1 Freshly created documentation of Lumache"  # what a reader sees; no "¶"
    assert rule_of(SPHINX_HTML5, "lumache") == "html5"


SPHINX_OLD = """
<div class="toctree-wrapper compound">
<p class="caption" role="heading"><span class="caption-text">High-level APIs</span></p>
<ul><li class="toctree-l1"><a class="reference internal" href="asyncio-runner.html">Runners</a></li></ul>
</div>
<div class="figure align-default" id="world-updated">
<img alt="../../_images/World-updated.jpg" src="../../_images/World-updated.jpg" />
<p class="caption"><span class="caption-number">Fig. 2.1 </span><span class="caption-text">Description of the default
parameters associated with the world</span><a class="headerlink" href="#world-updated" title="Permalink to this image">¶</a></p>
</div>
<p>The other commands needed to modify the <em>world</em> volume attributes will be given in the next sections.</p>
<img src="../../_images/loose.png" alt="Loose image" />"""


def test_sphinx_old_div_figure_caption_and_toctree_captions_ignored():
    """docutils < 0.18: div.figure > p.caption with span.caption-number/caption-text. The
    toctree's p.caption (a heading of a link list) is nobody's figure caption."""
    r = refs(SPHINX_OLD)
    assert r["World-updated.jpg"].figcaption == "Description of the default parameters associated with the world"
    assert r["loose.png"].figcaption is None
    assert rule_of(SPHINX_OLD, "World-updated") == "sphinx-old"
    assert boilerplate_alt(r["World-updated.jpg"].alt) == "file name"  # Sphinx's default alt is the path


WORDPRESS_CLASSIC_HTML5 = """
<figure id="attachment_12" aria-describedby="caption-attachment-12" style="width: 300px" class="wp-caption aligncenter">
<a href="https://example.org/wp-content/uploads/2023/05/harbour.jpg"><img class="size-medium wp-image-12" src="/wp-content/uploads/2023/05/harbour-300x200.jpg" alt="" width="300" height="200" srcset="/wp-content/uploads/2023/05/harbour-300x200.jpg 300w, /wp-content/uploads/2023/05/harbour-1024x683.jpg 1024w" sizes="(max-width: 300px) 100vw, 300px" /></a>
<figcaption id="caption-attachment-12" class="wp-caption-text">Fishing boats in the harbour at dawn</figcaption></figure>"""

WORDPRESS_CLASSIC_HTML4 = """
<div id="attachment_13" style="width: 310px" class="wp-caption alignnone">
<img aria-describedby="caption-attachment-13" class="size-medium wp-image-13" src="/wp-content/uploads/2023/05/market-300x200.jpg" alt="" width="300" height="200" />
<p id="caption-attachment-13" class="wp-caption-text">The Saturday market</p></div>"""

WORDPRESS_BLOCKS = """
<figure class="wp-block-image size-large"><img src="/wp-content/uploads/2023/05/bridge-1024x683.jpg" alt="" class="wp-image-14"/><figcaption class="wp-element-caption">The old stone bridge</figcaption></figure>
<figure class="wp-block-gallery has-nested-images columns-default is-cropped">
<figure class="wp-block-image size-large"><img src="/wp-content/uploads/2023/05/owl.jpg" alt="" class="wp-image-15"/><figcaption class="wp-element-caption">A barn owl</figcaption></figure>
<figure class="wp-block-image size-large"><img src="/wp-content/uploads/2023/05/heron.jpg" alt="" class="wp-image-16"/></figure>
<figcaption class="blocks-gallery-caption wp-element-caption">Birds of the estuary</figcaption></figure>"""

WORDPRESS_GALLERY = """
<div id='gallery-1' class='gallery galleryid-9 gallery-columns-3 gallery-size-thumbnail'>
<dl class='gallery-item'>
  <dt class='gallery-icon landscape'>
    <a href='/2023/05/post/fox/'><img width="150" height="150" src="/wp-content/uploads/2023/05/fox-150x150.jpg" class="attachment-thumbnail size-thumbnail" alt="" aria-describedby="gallery-1-17" /></a>
  </dt>
  <dd class='wp-caption-text gallery-caption' id='gallery-1-17'>
  A red fox in the snow
  </dd></dl>
<dl class='gallery-item'>
  <dt class='gallery-icon portrait'>
    <a href='/2023/05/post/hare/'><img width="150" height="150" src="/wp-content/uploads/2023/05/hare-150x150.jpg" class="attachment-thumbnail size-thumbnail" alt="" /></a>
  </dt>
  <dd class='wp-caption-text gallery-caption' id='gallery-1-18'>
  A hare
  </dd></dl>
<br style='clear: both' />
</div>"""


def test_wordpress_caption_shortcode_html5():
    """media.php img_caption_shortcode with html5 support: figure.wp-caption[aria-describedby]
    > a > img + figcaption.wp-caption-text; the srcset's largest candidate is the URL."""
    r = refs(WORDPRESS_CLASSIC_HTML5)["harbour-1024x683.jpg"]
    assert r.figcaption == "Fishing boats in the harbour at dawn"
    assert rule_of(WORDPRESS_CLASSIC_HTML5, "harbour") == "html5"


def test_wordpress_caption_shortcode_html4_aria_describedby():
    """Without html5 support: div.wp-caption > img[aria-describedby] + p.wp-caption-text."""
    assert refs(WORDPRESS_CLASSIC_HTML4)["market-300x200.jpg"].figcaption == "The Saturday market"
    assert rule_of(WORDPRESS_CLASSIC_HTML4, "market") == "aria"
    no_aria = WORDPRESS_CLASSIC_HTML4.replace('aria-describedby="caption-attachment-13" ', "")
    assert refs(no_aria)["market-300x200.jpg"].figcaption == "The Saturday market"
    assert rule_of(no_aria, "market") == "wordpress"


def test_wordpress_blocks_image_and_gallery():
    """block-library image/save.js and gallery: figcaption.wp-element-caption; a gallery image
    without its own caption gets the gallery's, one with its own keeps it."""
    r = refs(WORDPRESS_BLOCKS)
    assert r["bridge-1024x683.jpg"].figcaption == "The old stone bridge"
    assert r["owl.jpg"].figcaption == "A barn owl"
    assert r["heron.jpg"].figcaption == "Birds of the estuary"


def test_wordpress_classic_gallery():
    """media.php gallery_shortcode (html4): dl.gallery-item > dt.gallery-icon > a > img, and
    dd.wp-caption-text.gallery-caption (referenced by aria-describedby when there is one)."""
    r = refs(WORDPRESS_GALLERY)
    assert r["fox-150x150.jpg"].figcaption == "A red fox in the snow"
    assert r["hare-150x150.jpg"].figcaption == "A hare"
    assert rule_of(WORDPRESS_GALLERY, "hare") == "wordpress"


MEDIAWIKI_LEGACY_THUMB = """
<p>The <b>red fox</b> is the largest of the true foxes.</p>
<div class="thumb tright"><div class="thumbinner" style="width:222px;"><a href="/wiki/File:Fox_-_British_Wildlife_Centre_(17429406401).jpg" class="image"><img alt="" src="/images/thumb/1/16/Fox.jpg/220px-Fox.jpg" decoding="async" width="220" height="147" class="thumbimage" srcset="/images/thumb/1/16/Fox.jpg/330px-Fox.jpg 1.5x, /images/thumb/1/16/Fox.jpg/440px-Fox.jpg 2x" /></a>  <div class="thumbcaption"><div class="magnify"><a href="/wiki/File:Fox_-_British_Wildlife_Centre_(17429406401).jpg" class="internal" title="Enlarge"></a></div>A red fox at the <a href="/wiki/British_Wildlife_Centre" title="British Wildlife Centre">British Wildlife Centre</a></div></div></div>"""

MEDIAWIKI_FIGURE = """
<figure class="mw-default-size" typeof="mw:File/Thumb"><a href="/wiki/File:Vulpes_vulpes_range.png" class="mw-file-description"><img src="/images/thumb/a/a1/Vulpes_vulpes_range.png/220px-Vulpes_vulpes_range.png" decoding="async" width="220" height="110" class="mw-file-element" /></a><figcaption>Range of the red fox</figcaption></figure>
<span typeof="mw:File"><a href="/wiki/File:Paw.svg" class="mw-file-description"><img alt="Paw print" src="/images/Paw.png" width="20" height="20" class="mw-file-element" /></a></span>"""

MEDIAWIKI_GALLERY = """
<ul class="gallery mw-gallery-traditional">
		<li class="gallerybox" style="width: 155px">
			<div class="thumb" style="width: 150px; height: 150px;"><span typeof="mw:File"><a href="/wiki/File:Fox_cub.jpg" class="mw-file-description"><img src="/images/thumb/Fox_cub.jpg/120px-Fox_cub.jpg" decoding="async" width="120" height="90" class="mw-file-element" /></a></span></div>
			<div class="gallerytext">
<p>A fox cub
</p>
			</div>
		</li>
</ul>"""


def test_mediawiki_legacy_thumb():
    """Linker::makeThumbLink2, legacy media DOM: div.thumb > div.thumbinner > a.image >
    img.thumbimage, and div.thumbcaption after an empty div.magnify."""
    r = refs(MEDIAWIKI_LEGACY_THUMB)["440px-Fox.jpg"]
    assert r.figcaption == "A red fox at the British Wildlife Centre"
    assert rule_of(MEDIAWIKI_LEGACY_THUMB, "Fox.jpg") == "mediawiki-thumb"


def test_mediawiki_figure_typeof_mw_file():
    """The new media DOM: figure[typeof=mw:File/Thumb] > a.mw-file-description > img +
    figcaption; an inline span[typeof=mw:File] has no caption."""
    r = refs(MEDIAWIKI_FIGURE)
    assert r["220px-Vulpes_vulpes_range.png"].figcaption == "Range of the red fox"
    assert r["Paw.png"].figcaption is None


def test_mediawiki_gallery():
    """TraditionalImageGallery: li.gallerybox > div.thumb > span > a > img, div.gallerytext > p."""
    r = refs(MEDIAWIKI_GALLERY)["120px-Fox_cub.jpg"]
    assert r.figcaption == "A fox cub"
    assert rule_of(MEDIAWIKI_GALLERY, "Fox_cub") == "mediawiki-gallery"


def test_bootstrap_figure_caption():
    """Bootstrap 5 content/figures.md: figure.figure > img.figure-img + figcaption.figure-caption;
    also a div.figure theme that keeps the class names."""
    body = ('<figure class="figure"><img src="/img/lake.jpg" class="figure-img img-fluid rounded" alt="...">'
            '<figcaption class="figure-caption text-end">A mountain lake at noon.</figcaption></figure>'
            '<div class="figure"><img src="/img/pier.jpg" class="figure-img img-fluid"><div class="figure-caption">'
            'The pier</div></div>')
    r = refs(body)
    assert r["lake.jpg"].figcaption == "A mountain lake at noon."
    assert boilerplate_alt(r["lake.jpg"].alt) == "no words"  # Bootstrap's own example alt is "..."
    assert r["pier.jpg"].figcaption == "The pier"
    assert rule_of(body, "pier") == "bootstrap"


def test_html5_figure_plain_and_nested():
    """The plain HTML5 figure; a figcaption of a nested figure is not the outer image's."""
    body = ('<figure><img src="a.jpg" alt="x"><figure><img src="b.jpg"><figcaption>Inner</figcaption></figure>'
            '<figcaption>Figure 3: Outer pair</figcaption></figure>')
    r = refs(body)
    assert r["a.jpg"].figcaption == "Outer pair" and r["b.jpg"].figcaption == "Inner"


def test_aria_labelledby_and_role_figure():
    """aria-labelledby / aria-describedby pointing at elements with text; an empty target or a
    missing id is no caption."""
    body = ('<img src="a.png" aria-labelledby="t1 t2"><p id="t1">Sales</p><p id="t2">by quarter, 2024</p>'
            '<div role="figure" aria-labelledby="cap"><img src="b.png"><div id="cap">Figure 4. Cloud cover</div></div>'
            '<img src="c.png" aria-describedby="empty missing"><span id="empty"> </span>')
    r = refs(body)
    assert r["a.png"].figcaption == "Sales by quarter, 2024"
    assert r["b.png"].figcaption == "Cloud cover"
    assert r["c.png"].figcaption is None


@pytest.mark.parametrize("text,expected", [
    ("Figure 17.2. Original for demo", "Original for demo"),
    ("Fig. 3: The pipeline", "The pipeline"),
    ("Abbildung 2.1. Ebenen", "Ebenen"),
    ("Example 3.1. Using paths", "Using paths"),
    ("Figure 3", "Figure 3"),  # only a label: kept
    ("Image 2 of 5", "Image 2 of 5"),  # not a label
    ("Figures of speech", "Figures of speech"),
])
def test_caption_labels(text, expected):
    assert strip_label(text) == expected


def test_xhtml_with_xml_declaration_is_read_as_html():
    """DocBook writes XHTML with an <?xml?> declaration; a string page is still parsed as HTML."""
    html = ('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 '
            'Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n<html xmlns="http://www.w3.org/1999/xhtml">'
            f'<head><title>3. Blur Filters</title></head><body>{DOCBOOK_FIGURE}</body></html>')
    info = extract_page(html, PAGE)
    assert [r.figcaption for r in info.images] == ["Original for demo"]


# --- context as rendered ----------------------------------------------------------------------

def context_of(body: str, name: str = "x.png") -> str | None:
    return refs(body)[name].context


def test_inline_markup_adds_no_spaces():
    """gimp-help: “<span class="quote">“<span class="quote">Brushes</span>”</span>” and guilabels."""
    body = ('<p>The <span class="quote">“<span class="quote">Export Image</span>”</span> Dialog: '
            'click <span class="guiicon"><img src="x.png" /></span> <span class="guilabel">Export</span>.</p>')
    assert context_of(body) == "The “Export Image” Dialog: click Export."
    assert context_of("<p>un<b>break</b>able <img src='x.png'> w<i>o</i>rd</p>") == "unbreakable word"


def test_blocks_and_br_separate_lines_whitespace_collapses():
    body = "<div><p>Blur</p><p>Radius\n\n   <em>10</em></p><img src='x.png'></div>"
    assert context_of(body) == "Radius 10"
    assert context_of("<p>Line one<br>Line two <img src='x.png'><br>Line three</p>") == "Line two"
    assert context_of("<p>Above</p><div><img src='x.png'></div><p>Below</p>") == "Above\nBelow"
    assert context_of("<td>Left</td><td><img src='x.png'></td>".join(["<table><tr>", "</tr></table>"])) == "Left"


def test_short_caption_beats_a_large_unrelated_container():
    """The old rule skipped texts under 20 chars and took the first 400 chars of the container."""
    unrelated = "<p>" + "Unrelated introduction about licensing and history. " * 20 + "</p>"
    body = (f"<div class='sect3'>{unrelated}<div class='mediaobject'><img src='x.png'>"
            "<div class='caption'><p>Blur</p></div></div></div>")
    assert context_of(body) == "Blur"


def test_long_paragraph_window_is_centred_on_the_image():
    words_before = " ".join(f"b{i}" for i in range(200))
    words_after = " ".join(f"a{i}" for i in range(200))
    ctx = context_of(f"<p>{words_before} NEAR <img src='x.png'> HERE {words_after}</p>")
    assert len(ctx) <= CONTEXT_CHARS and "b199 NEAR HERE a0" in ctx
    assert ctx.split()[0].startswith("b") and ctx.split()[-1].startswith("a")  # whole words on both ends


def test_context_widens_only_when_the_images_block_has_no_text():
    body = ("<section><h2>Harbour views</h2><div class='gallery'><div><div><a href='#'><img src='x.png'></a>"
            "</div></div></div><footer><p>Photos by the club</p></footer></section>")
    assert context_of(body) == "Harbour views\nPhotos by the club"
    assert context_of("<div><div><img src='x.png'></div></div>") is None


def test_hidden_and_script_text_is_not_context():
    body = ("<p>Visible<script>var s = 'script text';</script><style>p{}</style>"
            "<noscript>enable js</noscript><span hidden>secret</span> <img src='x.png'></p>")
    assert context_of(body) == "Visible"


def test_context_is_capped_between_two_long_neighbours():
    long = "word " * 300
    ctx = context_of(f"<p>{long}end.</p><img src='x.png'><p>Start {long}</p>")
    assert len(ctx) <= CONTEXT_CHARS
    before, after = ctx.split("\n")
    assert before.endswith("end.") and after.startswith("Start")


def test_demo_style_page_keeps_its_sentence():
    """The demo's pages put an image after its paragraph in <body>: that paragraph comes first."""
    body = ("<h1>All about circles</h1><p>Here we show a red circle on a plain background.</p>"
            "<img src='x.png'><figure><img src='y.png' alt=''><figcaption>a blue circle</figcaption></figure>")
    ctx = context_of(body)
    assert ctx.split("\n")[0] == "Here we show a red circle on a plain background."


def test_renderer_is_reused_across_images_of_a_page():
    """One renderer per page: the same answers as fresh ones (its cache holds no marks)."""
    sel = Selector(text=f"<html><body>{DOCBOOK_INFORMALFIGURE}{DOCBOOK_FIGURE}</body></html>", type="html")
    shared = TextRenderer(blank_figures=True)
    imgs = sel.xpath("//img")
    fresh = [image_context(i.root, TextRenderer(blank_figures=True)) for i in imgs]
    assert [image_context(i.root, shared) for i in imgs] == fresh and len(set(fresh)) > 2


# --- boilerplate alts ----------------------------------------------------------------------------

@pytest.mark.parametrize("alt,reason", [
    ("image", "generic word"), ("Photo", "generic word"), ("logo", "generic word"), ("icon", "generic word"),
    ("spacer", "generic word"), ("picture", "generic word"), ("An image", "generic word"), ("image 3", "generic word"),
    ("Illustration", "generic word"),
    ("IMG_1234.jpg", "file name"), ("DSC00012.JPG", "file name"), ("screenshot-2.png", "file name"),
    ("IMG_1234", "file name"), ("Screenshot 2023-01-01 at 10.22.33", "file name"), ("spacer.gif", "file name"),
    ("../../_images/example.jpg", "file name"), ("3f2a9c0d1e4b5a6f7788", "file name"),
    ("beach day 2.jpg", "file name"), ("Screenshot 2024-01-05 at 10.22.33.png", "file name"),
    ("[Note]", "bracketed label"), ("[Warning]", "bracketed label"), ("[Important]", "bracketed label"),
    ("Prev", "navigation word"), ("Next", "navigation word"), ("Up", "navigation word"), ("Home", "navigation word"),
    ("Back to top", "navigation word"),
    ("Example", "role word"), ("Examples II", "role word"), ("Results", "role word"), ("Original image", "role word"),
    ("»", "no words"), ("...", "no words"), ("12", "number"),
])
def test_boilerplate_alts(alt, reason):
    assert boilerplate_alt(alt) == reason


@pytest.mark.parametrize("alt", [
    None, "", "a red circle", "Blur", "Iterations = 7", "Grid/List view", "company logo", "The Saturday market",
    "Logo of the GIMP project", "“Waves” filter options", "Next steps for the harbour", "photo of a fox in the snow",
    "Example of an image with alpha channel", "gimp.org", "Six", "Origin",
    "How to save a photo as .webp", "Convert your pictures from HEIC to JPG in three steps then save as final.png",
])
def test_real_alts_are_not_boilerplate(alt):
    assert boilerplate_alt(alt) is None


# --- site chrome ---------------------------------------------------------------------------------

DOCBOOK_NAV = """
<div class="navheader">
  <table width="100%" summary="Navigation header">
    <tr><th colspan="3" align="center">3. Blur Filters</th></tr>
    <tr>
      <td width="20%" align="left">
        <a accesskey="p" href="gimp-filters-common.html"><img src="images/prev.png" alt="Prev" /></a>
      </td>
      <th width="60%" align="center">Chapter 17. Filters</th>
      <td width="20%" align="right"> <a accesskey="n" href="gimp-filter-focus-blur.html"><img src="images/next.png" alt="Next" /></a></td>
    </tr>
  </table>
  <hr />
</div>
<div class="note" style="margin-left: 0.5in; margin-right: 0.5in;">
  <table border="0" summary="Note">
    <tr>
      <td rowspan="2" align="center" valign="top" width="25"><img alt="[Note]" src="images/note.png" /></td>
      <th align="left">Note</th>
    </tr>
    <tr><td align="left" valign="top"><p>Click <span class="guiicon"><img src="images/reset.png" /></span> to reset.</p></td></tr>
  </table>
</div>
<div class="navfooter">
  <table width="100%" summary="Navigation footer">
    <tr><td width="40%" align="left"><a accesskey="p" href="gimp-filters-common.html"><img src="images/prev.png" alt="Prev" /></a></td>
      <td width="20%" align="center"><a accesskey="u" href="filters.html"><img src="images/up.png" alt="Up" /></a></td>
      <td width="40%" align="right"><a accesskey="n" href="gimp-filter-focus-blur.html"><img src="images/next.png" alt="Next" /></a></td></tr>
    <tr><td width="40%" align="left" valign="top">2. Common Features</td>
      <td width="20%" align="center"><a accesskey="h" href="index.html"><img src="images/home.png" alt="Home" /></a></td>
      <td width="40%" align="right" valign="top">3.2. Focus Blur</td></tr>
  </table>
</div>"""
DOCBOOK_HEAD = ('<link rel="home" href="index.html" title="GNU Image Manipulation Program" />'
                '<link rel="up" href="filters.html" title="Chapter 17. Filters" />'
                '<link rel="prev" href="gimp-filters-common.html" title="2. Common Features" />'
                '<link rel="next" href="gimp-filter-focus-blur.html" title="3.2. Focus Blur" />')


def test_docbook_navigation_icons_and_admonition_are_chrome():
    """gimp-help's navheader/navfooter link to the pages its <link rel> names; the note's
    icon cell is an admonition; an icon inside the note's text is content."""
    r = refs(DOCBOOK_FIGURE + DOCBOOK_NAV, head=DOCBOOK_HEAD)
    assert {k: r[k].chrome for k in ("prev.png", "next.png", "up.png", "home.png", "note.png")} == {
        "prev.png": "link:prev", "next.png": "link:next", "up.png": "link:up", "home.png": "link:home",
        "note.png": "admonition"}
    assert r["reset.png"].chrome is None and r["blur-demo-orig.png"].chrome is None
    without_links = refs(DOCBOOK_NAV)
    assert without_links["prev.png"].chrome == "class:navheader"


def test_landmarks_and_roles():
    body = """
<header class="site-header"><a href="/" rel="home"><img class="custom-logo" src="/logo.png" alt="Acme"></a></header>
<nav><ul><li><a href="/a"><img src="/nav.png" alt="A"></a></li></ul></nav>
<div role="navigation"><img src="/role.png"></div>
<main><article><header><img src="/hero.jpg" alt="The harbour at dawn"></header><p>Text</p>
  <aside><img src="/pull.jpg" alt="A quote card"></aside>
  <footer><img src="/byline.jpg" alt="The author"></footer></article></main>
<aside class="widget-area"><img src="/ad.png" alt="Ad"></aside>
<footer><img src="/badge.png" alt="Badge"></footer>
<div class="breadcrumbs"><img src="/crumb.png"></div>"""
    chrome = {k: v.chrome for k, v in refs(body).items()}
    assert chrome == {
        "logo.png": "link:home", "nav.png": "nav", "role.png": "role:navigation", "hero.jpg": None,
        "pull.jpg": None, "byline.jpg": None, "ad.png": "aside", "badge.png": "footer", "crumb.png": "class:breadcrumbs",
    }


def test_chrome_images_are_kept():
    """Chrome is a recorded reason, never a drop: every <img> still gives an ImageRef."""
    r = refs(DOCBOOK_NAV, head=DOCBOOK_HEAD)
    assert sorted(r) == ["home.png", "next.png", "note.png", "prev.png", "reset.png", "up.png"]


# --- through the real crawl --------------------------------------------------------------------

def test_docbook_directory_crawled_through_localsite(tmp_path):
    """A DocBook page and its PNG/GIF images served from a directory (LocalSite root=, which
    now names .gif and .css by their types) and crawled with the real CLI: the records carry
    the caption and the nearest text."""
    from PIL import Image

    from capcrawl.localsite import LocalSite, content_type

    from .conftest import by_url, crawl_rows, run_cli

    assert [content_type(tmp_path / n) for n in ("a.html", "a.png", "a.gif", "a.css", "a.bin")] == [
        "text/html; charset=utf-8", "image/png", "image/gif", "text/css", "application/octet-stream"]
    site_dir = tmp_path / "site"
    (site_dir / "images" / "filters" / "examples").mkdir(parents=True)
    Image.new("RGB", (120, 90), "orange").save(site_dir / "images" / "filters" / "examples" / "blur-demo-orig.png")
    Image.new("RGB", (96, 72), "teal").save(site_dir / "perlin_noise-iter.gif")
    body = DOCBOOK_FIGURE + DOCBOOK_MEDIAOBJECT.replace("images/filters/examples/render/perlin_noise-iter.png",
                                                       "perlin_noise-iter.gif")
    (site_dir / "index.html").write_text(
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n<html xmlns="http://www.w3.org/1999/xhtml">'
        f"<head><title>3. Blur Filters</title></head><body>{body}</body></html>", encoding="utf-8")
    with LocalSite("127.0.0.1", root=site_dir) as site:
        run_cli("crawl", site.url("/index.html"), "--work", str(tmp_path / "w"), "--allow-private-addresses",
                check=True)
        rows = by_url(crawl_rows(tmp_path / "w"))
        fig = rows[site.url("/images/filters/examples/blur-demo-orig.png")]
        gif = rows[site.url("/perlin_noise-iter.gif")]
    assert (fig["status"], fig["figcaption"], fig["context"]) == ("ok", "Original for demo", "Figure 17.2. Original for demo")
    assert (gif["status"], gif["image_format"]) == ("ok", "jpg")
    assert (gif["alt"], gif["figcaption"], gif["context"]) == (None, "Iterations = 7", "Iterations = 7")


def test_lazy_image_fallback_in_noscript_has_context():
    """Lazy-loading themes repeat the image in <noscript>; that copy is found, with its text,
    and noscript's text is no context for other images."""
    body = ('<figure class="wp-block-image"><img data-src="/a.jpg" src="data:image/gif;base64,R0lGOD" alt="">'
            '<noscript><img src="/a.jpg" alt=""></noscript><figcaption class="wp-element-caption">Dunes</figcaption></figure>'
            '<p>Sand <noscript><img src="/b.jpg"></noscript>everywhere</p>')
    info = extract_page(f"<html><body>{body}</body></html>", PAGE)
    assert [(r.url.rsplit("/", 1)[-1], r.figcaption, r.context) for r in info.images] == [
        ("a.jpg", "Dunes", "Dunes"), ("a.jpg", "Dunes", "Dunes"), ("b.jpg", None, "Sand everywhere")]


def test_a_link_that_is_both_prev_and_up_reads_prev():
    """gimp-help apcs02.html: the previous page is also the parent; the arrow is a prev link."""
    head = '<link rel="up" href="apcs01.html" /><link rel="prev" href="apcs01.html" />'
    body = '<div class="navheader"><a accesskey="p" href="apcs01.html"><img src="images/prev.png" alt="Prev" /></a></div>'
    assert refs(body, head=head)["prev.png"].chrome == "link:prev"


def test_images_outside_img_tags_are_collected_and_template_ones_are_not():
    """SVG <image>, <object>/<embed> of an image, and inline CSS backgrounds are images a
    browser shows (with no alt); <template> content is never shown; an <object> of a PDF,
    an <embed> of a plugin and a data: background are no images (data: ones are counted)."""
    body = ('<template><img src="/t.jpg" alt="inert"></template>'
            '<p>Dunes at dusk<svg><image href="/s1.png"/><image xlink:href="/s2.png"/></svg></p>'
            '<object data="/o.jpg"></object><object data="/doc.pdf" type="application/pdf"></object>'
            '<object data="/render?id=3" type="image/png"></object><embed src="/e.webp"><embed src="/movie.swf">'
            '<div style="color: red; background-image: url(\'/bg.jpg\')">Hero</div>'
            '<div style="background:#fff url(/bg2.png) no-repeat"></div>'
            '<div style="background-image: url(/layer1.png), linear-gradient(red, blue), url(\'/layer2.png\')"></div>'
            '<div style="background: url(data:image/png;base64,AAA)"></div>'
            '<div style="background-image:url(/a.jpg)"></div><img src="/a.jpg" alt="A">'
            '<div style="background-image:url(/a.jpg)"></div>'
            '<nav><span style="background-image:url(/logo.png)"></span></nav>')
    info = extract_page(f"<html><body>{body}</body></html>", PAGE)
    names = [r.url.rsplit("/", 1)[-1] for r in info.images]
    assert names == ["s1.png", "s2.png", "o.jpg", "render?id=3", "e.webp", "bg.jpg", "bg2.png", "layer1.png", "layer2.png",
                     "a.jpg", "logo.png"]
    by_name = dict(zip(names, info.images))
    assert all(by_name[n].alt is None for n in names if n != "a.jpg") and by_name["a.jpg"].alt == "A"
    assert by_name["s1.png"].context == "Dunes at dusk"
    assert by_name["logo.png"].chrome == "nav" and by_name["bg.jpg"].chrome is None
    assert info.data_uris == 1


def test_alt_and_title_text_are_capped_at_a_word_boundary():
    from crawler.extract import ALT_CHARS

    info = extract_page(f'<img src="/a.jpg" alt="{"word " * 10_000}" title="{"t " * 5_000}">', PAGE)
    ref = info.images[0]
    assert 0 < len(ref.alt) <= ALT_CHARS and ref.alt.endswith("word")
    assert 0 < len(ref.title_attr) <= ALT_CHARS


def test_picture_sources_of_undecodable_types_are_skipped_and_descriptors_compare_like_with_like():
    """A <source type="image/jxl"> is what a browser without JPEG XL skips (and Pillow cannot
    read); 2x at width=400 is 800 px, larger than 600w; without a width, the <img>'s own unit
    decides and width descriptors are never weighed against densities as plain numbers."""
    jxl = ('<picture><source type="image/jxl" srcset="/big.jxl 4000w"><source type="image/webp" srcset="/mid.webp 1200w">'
           '<img src="/small.jpg" alt="A boat"></picture>')
    assert list(refs(jxl)) == ["mid.webp"]
    sized = '<picture><source srcset="/w600.jpg 600w"><img width="400" srcset="/d1.jpg 1x, /d2.jpg 2x" alt="x"></picture>'
    assert list(refs(sized)) == ["d2.jpg"]
    unsized = '<picture><source srcset="/w600.jpg 600w"><img srcset="/d1.jpg 1x, /d3.jpg 3x" alt="x"></picture>'
    assert list(refs(unsized)) == ["d3.jpg"]
    only_w = '<img srcset="/a.jpg 480w, /b.jpg 1080w" data-srcset="/c.jpg 2x" alt="x">'
    assert list(refs(only_w)) == ["b.jpg"]


def test_lazy_placeholders_never_win_and_noscript_alt_reaches_the_lazy_image():
    """A data: placeholder in srcset ties with the real lazy candidate and loses; data-lazy-srcset
    is read; the alt of a <noscript> copy fills the lazy <img> that has none."""
    body = ('<img srcset="data:image/gif;base64,R0lGOD 1x" data-srcset="/p34.jpg 1x">'
            '<img src="data:image/gif;base64,R0lGOD" data-lazy-srcset="/q1.jpg 400w, /q2.jpg 800w">'
            '<img class="lazy" data-src="/cat.jpg"><noscript><img src="/cat.jpg" alt="A cat on a wall"></noscript>')
    info = extract_page(f"<html><body>{body}</body></html>", PAGE)
    names = [(r.url.rsplit("/", 1)[-1], r.alt) for r in info.images]
    assert names == [("p34.jpg", None), ("q2.jpg", None), ("cat.jpg", "A cat on a wall"), ("cat.jpg", "A cat on a wall")]


def test_video_posters_shared_images_and_linked_files_are_images():
    """A <video>'s poster frame, the image a page shares itself with (Open Graph, X's
    twitter:image, rel=image_src; each URL once) and a link to an image file are all images;
    a link wrapping a thumbnail takes the thumbnail's alt and the link's own words."""
    head = ('<meta property="og:image" content="/share/og.jpg"><meta name="twitter:image" content="/share/og.jpg">'
            '<meta name="Twitter:Image" content="/share/tw.jpg"><meta property="og:image:secure_url" content="/share/sec.jpg">'
            '<link rel="image_src" href="/share/src.jpg">')
    body = ('<p>Launch day <video poster="/v/poster.jpg" src="/v/launch.mp4"></video> on the pad.</p>'
            '<a href="/full/rocket.jpg"><img src="/thumb/rocket.jpg" alt=" The rocket\n  on its pad "></a>'
            '<p>See <a href="/files/map.png" title="Site map">the site map</a> for directions.</p>'
            '<a href="/thumb/rocket.jpg">same file as the thumbnail</a><a href="/wiki/File:Rocket.jpg">file page</a>')
    info = extract_page(f"<html><head>{head}</head><body>{body}</body></html>", PAGE)
    by_path = {r.url.split("/", 3)[-1]: r for r in info.images}
    assert list(by_path) == ["v/poster.jpg", "thumb/rocket.jpg", "full/rocket.jpg", "files/map.png",
                             "share/og.jpg", "share/tw.jpg", "share/sec.jpg", "share/src.jpg"]
    assert by_path["v/poster.jpg"].alt is None and by_path["v/poster.jpg"].context == "Launch day on the pad."
    assert by_path["full/rocket.jpg"].alt == "The rocket on its pad"
    linked = by_path["files/map.png"]
    assert linked.alt is None and linked.title_attr == "Site map" and linked.context == "See the site map for directions."


def test_a_directory_listing_in_pre_gives_each_file_its_own_line():
    """nginx's autoindex: one <pre>, a line per file. A newline in <pre> is a line break, so
    each file's context is its own line, not the whole listing."""
    listing = ('<h1>Index of /</h1><hr><pre><a href="../">../</a>\n'
               '<a href="sub/">sub/</a>                      02-Dec-2026 11:41       -\n'
               '<a href="a%20b.jpg">a b.jpg</a>                   02-Dec-2026 11:41   37200\n'
               '<a href="c.png">c.png</a>                     02-Dec-2026 11:41  180457\n</pre><hr>')
    info = extract_page(f"<html><head><title>Index of /</title></head><body>{listing}</body></html>", PAGE)
    assert [(r.url.rsplit("/", 1)[-1], r.context) for r in info.images] == [
        ("a%20b.jpg", "a b.jpg 02-Dec-2026 11:41 37200"), ("c.png", "c.png 02-Dec-2026 11:41 180457")]
