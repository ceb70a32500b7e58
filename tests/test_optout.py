"""Opt-out signals: the parsers on small inputs, then real crawls against loopback hosts.

Signals (crawler/optout.py): TDMRep (tdmrep.json, tdm-reservation header and meta), the IETF
AI preferences (Content-Usage header and robots.txt rule), Content-Signal in robots.txt,
Spawning's ai.txt and noai/noimageai/noml. What a host's files opt out is never requested;
what a response declares for itself is downloaded and discarded.
"""

from __future__ import annotations

import json
import logging

import pytest
from parsel import Selector

from crawler import optout
from crawler.optout import (
    AiTxtRules,
    OptOut,
    PathPattern,
    RobotsRules,
    SiteRules,
    TdmRepRules,
    forbidding_label,
    most_restrictive,
    response_opt_out,
    url_path,
    usage_preferences,
)
from common.records import CRAWL_COLUMNS, PageStatus, Status
from crawler.structured_fields import InnerList, Item, StructuredFieldError, Token, parse_dictionary

from .conftest import by_url, crawl_rows, jpeg, run_cli

IMG = "image/jpeg"


# --- Structured Field dictionaries (RFC 9651) -------------------------------------------------


def test_structured_dictionary_members_and_parameters():
    got = parse_dictionary('train-ai=n, search=y;why="x", flag, l=(1 2);q, n=-1.5, s="a\\"b"')
    assert got["train-ai"] == Item(Token("n"))
    assert got["search"] == Item(Token("y"), {"why": "x"})
    assert got["flag"] == Item(True)
    assert isinstance(got["l"], InnerList) and [i.value for i in got["l"].items] == [1, 2] and got["l"].params == {"q": True}
    assert str(got["n"].value) == "-1.5" and got["s"].value == 'a"b'


@pytest.mark.parametrize("bad", ["Train-ai=n", "train-ai=n,", "train-ai=n;", "train-ai==n", "a=1 b=2", 'a="open', "a=1.2345"])
def test_structured_dictionary_rejects_what_rfc_9651_rejects(bad):
    with pytest.raises(StructuredFieldError):
        parse_dictionary(bad)


# --- the IETF vocabulary ----------------------------------------------------------------------


@pytest.mark.parametrize("statement,label", [
    ("train-ai=n", "train-ai"),
    ("train-ai=n, search=y", "train-ai"),
    ("search=n", None),
    ("train-ai=y", None),
    ('train-ai="n"', None),  # not a Token: unknown
    ("train-ai=y, train-ai, search=n", None),  # the draft's example: the last train-ai is a Boolean
    ("train-ai;allow=n, train-ai=y", None),  # parameters mean nothing
    ("Train-ai=n", None),  # upper case: the statement does not parse, nothing is known
    ("ai-use=n", "ai-use"),  # read as forbidding, as issue 13 asks
    ("bots=n", "bots"),  # automated processing (drafts -04/-05) covers training
    ("all=n, train-ai=y", None),  # a more specific allow overrides a broader disallow
    ("train-ai=y, train-genai=n", "train-genai"),  # training a generative model is forbidden
    ("tdm=n", "tdm"), ("ai=n", "ai"),  # labels of the drafts before July 2025
])
def test_usage_preferences_forbidding_training(statement, label):
    assert forbidding_label(usage_preferences(statement)) == label


# --- robots.txt Content-Usage and Content-Signal -----------------------------------------------

ATTACH_EXAMPLE = """User-Agent: *
Allow: /
Disallow: /never/
Content-Usage: train-ai=n
Content-Usage: /ai-ok/ train-ai=y

User-Agent: ExampleBot
Allow: /
Content-Usage: train-ai=y
"""


def test_robots_content_usage_follows_the_attach_drafts_example():
    ours = RobotsRules(ATTACH_EXAMPLE, "capcrawl")
    assert ours.decision("http://h/test") == OptOut("content_usage", "robots.txt", "Content-Usage: train-ai=n")
    assert ours.decision("http://h/ai-ok/test") is None  # the longer path wins
    assert RobotsRules(ATTACH_EXAMPLE, "examplebot").decision("http://h/test") is None  # its own group
    assert ours.disallowing_rule("http://h/never/x") == "Disallow: /never/"
    assert ours.disallowing_rule("http://h/test") is None


def test_robots_content_usage_same_path_most_restrictive_and_wildcards():
    text = "User-agent: *\nContent-Usage: /a/ train-ai=y\nContent-Usage: /a/ train-ai=n  # both apply\nContent-Usage: /*.png$ train-ai=n\n"
    rules = RobotsRules(text, "capcrawl")
    assert rules.decision("http://h/a/x").value == "Content-Usage: /a/ train-ai=n"
    assert rules.decision("http://h/b/x.png").value == "Content-Usage: /*.png$ train-ai=n"
    assert rules.decision("http://h/b/x.png?size=2") is None  # "$": the path ends there
    assert rules.decision("http://h/b/x.jpg") is None


def test_parse_robots_content_signal_per_user_agent_group():
    text = ("User-agent: *\nContent-Signal: search=yes, ai-train=yes\nAllow: /\n\n"
            "User-agent: capcrawl\nUser-agent: otherbot\nContent-signal: search=yes,AI-Train=No\n")
    assert RobotsRules(text, "capcrawl").decision("http://h/x") == OptOut(
        "content_signal", "robots.txt", "Content-signal: search=yes,AI-Train=No")
    assert RobotsRules(text, "thirdbot").decision("http://h/x") is None
    only_input = "User-agent: *\nContent-Signal: search=yes, ai-input=no\n"
    assert RobotsRules(only_input, "capcrawl").decision("http://h/x") is None  # ai-input is not training


def test_robots_groups_follow_rfc_9309():
    text = ("Content-Signal: ai-train=no\n"  # before any user-agent line: no group
            "User-agent: capcrawl/2.0\nDisallow: /a/\nSitemap: http://h/s.xml\n"
            "User-agent: capcrawl\nDisallow: /b/\n"  # a second group for us: combined with the first
            "User-agent: *\nDisallow: /\n")
    rules = RobotsRules(text, "capcrawl")
    assert rules.decision("http://h/x") is None
    assert rules.disallowing_rule("http://h/a/1") == "Disallow: /a/" and rules.disallowing_rule("http://h/b/1") == "Disallow: /b/"
    assert rules.disallowing_rule("http://h/c") is None  # the * group is not ours


# --- ai.txt ----------------------------------------------------------------------------------

SPAWNING = """# Spawning AI
# Prevent datasets from using the following file types

User-Agent: *
Disallow: *.jpg
Disallow: *.png
Allow: /free/*.jpg
"""


def test_ai_txt_spawning_file_types():
    rules = AiTxtRules(SPAWNING, "capcrawl")
    assert rules.decision("http://h/photos/a.jpg") == OptOut("ai_txt", "ai.txt", "Disallow: *.jpg")
    assert rules.decision("http://h/a.png?x=1").value == "Disallow: *.png"
    assert rules.decision("http://h/free/a.jpg") is None  # the longer Allow wins
    assert rules.decision("http://h/a.gif") is None
    assert AiTxtRules("User-Agent: *\nDisallow: /\nDisallow: *\n", "capcrawl").decision("http://h/").value == "Disallow: /"


# --- TDMRep ----------------------------------------------------------------------------------

TDMREP_EXAMPLE = json.dumps([
    {"location": "/directory-a/", "tdm-reservation": 1},
    {"location": "/directory-b/html/", "tdm-reservation": 1, "tdm-policy": "https://provider.com/policies/policy.json"},
    {"location": "/directory-b/images/*.jpg", "tdm-reservation": 0},
])


def test_tdmrep_file_rules_from_the_report():
    rules = TdmRepRules.parse(TDMREP_EXAMPLE)
    got = rules.decision("http://h/directory-a/doc.pdf")
    assert got.signal == "tdmrep" and got.source == "/.well-known/tdmrep.json"
    assert json.loads(got.value) == {"location": "/directory-a/", "tdm-reservation": 1}
    assert "policy.json" in rules.decision("http://h/directory-b/html/x.html").value
    assert rules.decision("http://h/directory-b/images/x.jpg") is None
    assert rules.decision("http://h/elsewhere") is None


def test_tdmrep_first_match_decides_and_values():
    rules = TdmRepRules.parse('[{"location": "/a/ok/", "tdm-reservation": 0}, {"location": "/a/", "tdm-reservation": "1"},'
                              ' {"location": "/b/", "tdm-reservation": 2}, {"location": "/c/", "tdm-reservation": 7}]')
    assert rules.decision("http://h/a/ok/1") is None and rules.decision("http://h/a/1") is not None
    assert rules.decision("http://h/b/1") is not None  # the earlier draft's 2: reserved with a policy
    assert rules.decision("http://h/c/1") is None  # a protocol error: unset


@pytest.mark.parametrize("text", ["{not json", '{"location": "/", "tdm-reservation": 1}', "<html>404</html>", "[1, 2]"])
def test_malformed_tdmrep_is_ignored_and_logged(text, caplog):
    with caplog.at_level(logging.INFO, logger="crawler.optout"):
        rules = TdmRepRules.parse(text, "http://h/.well-known/tdmrep.json")
    assert rules.decision("http://h/x") is None
    assert "http://h/.well-known/tdmrep.json" in caplog.text


def test_tdmrep_rule_without_location_is_skipped_the_rest_kept():
    rules = TdmRepRules.parse('[{"tdm-reservation": 1}, {"location": "/x/", "tdm-reservation": 1}]')
    assert rules.decision("http://h/y") is None and rules.decision("http://h/x/1") is not None


# --- headers and meta tags -------------------------------------------------------------------


def test_response_headers():
    assert response_opt_out({"tdm-reservation": ["1"], "tdm-policy": ["https://p/x"]}, "capcrawl") == OptOut(
        "tdmrep", "tdm-reservation header", "1 (tdm-policy: https://p/x)")
    assert response_opt_out({"tdm-reservation": ["0"]}, "capcrawl") is None
    assert response_opt_out({"content-usage": ["search=y", "train-ai=n"]}, "capcrawl") == OptOut(
        "content_usage", "Content-Usage header", "search=y, train-ai=n")
    assert response_opt_out({"x-robots-tag": ["noindex, noml"]}, "capcrawl") == OptOut("noai", "X-Robots-Tag", "noindex, noml")
    assert response_opt_out({"x-robots-tag": ["otherbot: noml"]}, "capcrawl") is None
    assert response_opt_out({"x-robots-tag": ["capcrawl: noml"]}, "capcrawl").signal == "noai"


def test_page_meta_tags_and_tdmrep_priority():
    def page(head: str) -> Selector:
        return Selector(text=f"<html><head>{head}</head><body></body></html>")

    meta = page('<meta name="TDM-Reservation" content="1"><meta name="tdm-policy" content="https://p/pol">')
    assert response_opt_out({}, "capcrawl", meta) == OptOut("tdmrep", "meta tdm-reservation", "1 (tdm-policy: https://p/pol)")
    # TDMRep: HTML metadata supersedes the header; an absent one does not reset it
    assert response_opt_out({"tdm-reservation": ["1"]}, "capcrawl", page('<meta name="tdm-reservation" content="0">')) is None
    assert response_opt_out({"tdm-reservation": ["1"]}, "capcrawl", page("")).source == "tdm-reservation header"
    assert response_opt_out({}, "capcrawl", page('<meta name="robots" content="index, noml">')) == OptOut(
        "noai", "meta robots", "index, noml")
    assert response_opt_out({}, "capcrawl", page('<meta name="capcrawl" content="noimageai">')).source == "meta capcrawl"
    assert response_opt_out({}, "capcrawl", page('<meta name="otherbot" content="noai">')) is None


def test_most_restrictive_precedence():
    noai, tdm = OptOut("noai", "X-Robots-Tag", "noai"), OptOut("tdmrep", "tdm-reservation header", "1")
    usage = OptOut("content_usage", "Content-Usage header", "train-ai=n")
    assert most_restrictive(None, None) is None
    assert most_restrictive(None, noai) == noai
    assert most_restrictive(noai, usage, tdm) == tdm and most_restrictive(noai, usage) == usage
    assert optout.PRECEDENCE[0] == "robots"


def test_site_rules_combine_the_files():
    site = SiteRules.from_texts("capcrawl", "User-agent: *\nContent-Signal: ai-train=no\n", SPAWNING, TDMREP_EXAMPLE)
    assert site.decision("http://h/directory-a/x.jpg").signal == "tdmrep"  # all three apply: TDMRep is recorded
    assert site.decision("http://h/x.gif").signal == "content_signal"
    assert SiteRules.from_texts("capcrawl", None, None, None).decision("http://h/x") is None


def test_paths_compare_with_normalised_percent_encoding():
    assert url_path("http://h/%7Euser/caf\u00e9?q=a b") == "/~user/caf%C3%A9?q=a%20b"
    assert PathPattern.parse("/caf%c3%a9").matches(url_path("http://h/caf\u00e9/x"))
    assert PathPattern.parse("/path/foo-%24").matches(url_path("http://h/path/foo-$"))  # TDMRep's example
    assert not PathPattern.parse("/path/foo-$").matches(url_path("http://h/path/foo-$"))  # "$" ends the pattern there
    assert PathPattern.parse("/a/*/c$").matches("/a/b/b/c") and not PathPattern.parse("/a/*/c$").matches("/a/b/cd")


def test_new_statuses_and_evidence_columns_in_the_contract():
    for name in ("tdmrep", "content_usage", "content_signal", "ai_txt", "noai"):
        assert Status(name).value == PageStatus(name).value == name
    i = CRAWL_COLUMNS.index("error")
    assert CRAWL_COLUMNS[i + 1:i + 4] == ("opt_out_signal", "opt_out_source", "opt_out_value")


# --- real crawls against loopback hosts ---------------------------------------------------------


def page(body: str, head: str = "") -> str:
    return f"<!doctype html><html><head><title>t</title>{head}</head><body>{body}</body></html>"


def imgs(*urls: str) -> str:
    return "".join(f'<img src="{u}" alt="image {i}">' for i, u in enumerate(urls))


POLICY_FILES = ("/robots.txt", "/ai.txt", "/.well-known/tdmrep.json")


@pytest.fixture(scope="module")
def crawled(tmp_path_factory):
    """One crawl over four hosts, each opting out in its own way."""
    from capcrawl.localsite import LocalSite

    work = tmp_path_factory.mktemp("optout")
    with LocalSite("127.0.0.1") as a, LocalSite("127.0.0.2") as b, LocalSite("127.0.0.3") as c, LocalSite("127.0.0.4") as d:
        a.add("/robots.txt", "User-agent: *\nDisallow: /private/\nContent-Usage: /cu/ train-ai=n\n"
                             "Content-Usage: /cu/ok/ train-ai=y\n", content_type="text/plain")
        a.add("/.well-known/tdmrep.json", json.dumps([
            {"location": "/tdm/ok/", "tdm-reservation": 0},
            {"location": "/tdm/", "tdm-reservation": 1, "tdm-policy": "https://example.com/policy.json"},
        ]), content_type="application/json")
        pages = ["/images.html", "/tdm/page.html", "/cu/page.html", "/meta-tdm.html", "/meta-tdm-zero.html",
                 "/cu-header.html", "/noml.html", "/meta-noml.html"]
        a.add("/", page("".join(f'<a href="{p}">{p}</a>' for p in pages)))
        a.add("/images.html", page(imgs(
            "/cu/a.jpg", "/cu/ok/b.jpg", "/tdm/c.jpg", "/tdm/ok/d.jpg", "/img/hdr-tdm.jpg", "/img/hdr-cu.jpg",
            "/img/noml.jpg", "/img/other-noml.jpg", "/img/plain.jpg", "/private/p.jpg",
            b.url("/x.png"), b.url("/y.jpg"), c.url("/z.jpg"), d.url("/w.jpg"),
        )))
        a.add("/tdm/page.html", page(imgs("/img/on-tdm-page.jpg")))
        a.add("/cu/page.html", page(imgs("/img/on-cu-page.jpg")))
        a.add("/meta-tdm.html", page(imgs("/img/on-meta-page.jpg"), head='<meta name="tdm-reservation" content="1">'))
        a.add("/meta-tdm-zero.html", page(imgs("/img/on-meta-zero-page.jpg"), head='<meta name="tdm-reservation" content="0">'),
              headers={"tdm-reservation": "1"})
        a.add("/cu-header.html", page(imgs("/img/on-cu-header-page.jpg")), headers={"Content-Usage": "search=y, train-ai=n"})
        a.add("/noml.html", page(imgs("/img/on-noml-page.jpg")), headers={"X-Robots-Tag": "noml"})
        a.add("/meta-noml.html", page(imgs("/img/on-meta-noml-page.jpg"), head='<meta name="robots" content="index, noml">'))
        for n, path in enumerate(["/cu/a.jpg", "/cu/ok/b.jpg", "/tdm/c.jpg", "/tdm/ok/d.jpg", "/img/plain.jpg",
                                  "/img/other-noml.jpg", "/private/p.jpg", "/img/on-tdm-page.jpg", "/img/on-cu-page.jpg",
                                  "/img/on-meta-page.jpg", "/img/on-meta-zero-page.jpg", "/img/on-cu-header-page.jpg",
                                  "/img/on-noml-page.jpg", "/img/on-meta-noml-page.jpg"]):
            a.add(path, jpeg(pattern=n + 1), content_type=IMG)
        a.routes["/img/other-noml.jpg"].headers = {"X-Robots-Tag": "otherbot: noml"}
        a.add("/img/hdr-tdm.jpg", jpeg(pattern=20), content_type=IMG, headers={"tdm-reservation": "1"})
        a.add("/img/hdr-cu.jpg", jpeg(pattern=21), content_type=IMG, headers={"Content-Usage": "train-ai=n, search=y"})
        a.add("/img/noml.jpg", jpeg(pattern=22), content_type=IMG, headers={"X-Robots-Tag": "noml"})
        # b: Spawning's ai.txt; a broken tdmrep.json that must change nothing
        b.add("/ai.txt", "# Spawning AI\nUser-Agent: *\nDisallow: *.png\n", content_type="text/plain")
        b.add("/.well-known/tdmrep.json", "{this is not json", content_type="application/json")
        b.add("/x.png", jpeg(pattern=23), content_type="image/png")
        b.add("/y.jpg", jpeg(pattern=24), content_type=IMG)
        # c: Content-Signal for our user agent's group; d: for another agent's only, and an
        # HTML page at /ai.txt (a "soft 404") that must not be read as rules
        c.add("/robots.txt", "User-agent: *\nContent-Signal: search=yes, ai-train=yes\n\n"
                             "User-agent: capcrawl\nContent-Signal: search=yes, ai-train=no\n", content_type="text/plain")
        c.add("/z.jpg", jpeg(pattern=25), content_type=IMG)
        d.add("/robots.txt", "User-agent: otherbot\nContent-Signal: ai-train=no\n\nUser-agent: *\nContent-Signal: ai-train=yes\n",
              content_type="text/plain")
        d.add("/ai.txt", page("<p>User-Agent: *</p>\nDisallow: /\n"))
        d.add("/w.jpg", jpeg(pattern=26), content_type=IMG)
        proc = run_cli("crawl", a.url("/"), "--work", str(work), "--allow-private-addresses", "--min-image-size", "10",
                       "--concurrency", "8", timeout=180)
        assert proc.returncode == 0, proc.stderr
        rows = by_url(crawl_rows(work))
        yield {"hosts": {"a": a, "b": b, "c": c, "d": d}, "rows": rows,
               "stats": json.loads((work / "crawl" / "stats.json").read_text())}


def row(crawled, host: str, path: str) -> dict:
    url = crawled["hosts"][host].url(path)
    assert url in crawled["rows"], f"{url} not recorded; have {sorted(crawled['rows'])}"
    return crawled["rows"][url]


def evidence(r: dict) -> tuple:
    return r["status"], r["opt_out_signal"], r["opt_out_source"], r["opt_out_value"]


def test_policy_files_fetched_once_per_host(crawled):
    for name, site in crawled["hosts"].items():
        for path in POLICY_FILES:
            assert site.requested(path) == 1, f"{name}{path} requested {site.requested(path)} times"


def test_robots_content_usage_path_scoped(crawled):
    a = crawled["hosts"]["a"]
    r = row(crawled, "a", "/cu/a.jpg")
    assert evidence(r) == ("content_usage", "content_usage", "robots.txt", "Content-Usage: /cu/ train-ai=n")
    assert r["image"] is None and a.requested("/cu/a.jpg") == 0
    assert row(crawled, "a", "/cu/ok/b.jpg")["status"] == "ok"  # the longer path allows it
    assert a.requested("/cu/page.html") == 0 and a.requested("/img/on-cu-page.jpg") == 0


def test_tdmrep_file_location_rules(crawled):
    a = crawled["hosts"]["a"]
    r = row(crawled, "a", "/tdm/c.jpg")
    assert r["status"] == "tdmrep" and r["opt_out_source"] == "/.well-known/tdmrep.json"
    assert json.loads(r["opt_out_value"])["tdm-policy"] == "https://example.com/policy.json"
    assert a.requested("/tdm/c.jpg") == 0
    assert row(crawled, "a", "/tdm/ok/d.jpg")["status"] == "ok"  # the first matching rule: not reserved
    assert a.requested("/tdm/page.html") == 0 and a.requested("/img/on-tdm-page.jpg") == 0


def test_tdm_reservation_header_on_an_image(crawled):
    r = row(crawled, "a", "/img/hdr-tdm.jpg")
    assert evidence(r) == ("tdmrep", "tdmrep", "tdm-reservation header", "1")
    assert r["image"] is None and r["sha256"] is None and "discarded" in r["error"]
    assert crawled["hosts"]["a"].requested("/img/hdr-tdm.jpg") == 1


def test_content_usage_header_on_an_image(crawled):
    r = row(crawled, "a", "/img/hdr-cu.jpg")
    assert evidence(r) == ("content_usage", "content_usage", "Content-Usage header", "train-ai=n, search=y")
    assert r["image"] is None


def test_x_robots_tag_noml(crawled):
    r = row(crawled, "a", "/img/noml.jpg")
    assert evidence(r) == ("noai", "noai", "X-Robots-Tag", "noml") and r["image"] is None
    assert row(crawled, "a", "/img/other-noml.jpg")["status"] == "ok"  # addressed to another bot


def test_page_meta_tdm_reservation(crawled):
    a = crawled["hosts"]["a"]
    r = row(crawled, "a", "/img/on-meta-page.jpg")
    assert evidence(r) == ("tdmrep", "tdmrep", "meta tdm-reservation", "1")
    assert a.requested("/meta-tdm.html") == 1 and a.requested("/img/on-meta-page.jpg") == 0
    # a meta tag saying 0 supersedes the page's tdm-reservation: 1 header (TDMRep's priority)
    assert row(crawled, "a", "/img/on-meta-zero-page.jpg")["status"] == "ok"


def test_page_headers_cover_their_images(crawled):
    a = crawled["hosts"]["a"]
    assert evidence(row(crawled, "a", "/img/on-cu-header-page.jpg"))[:3] == ("content_usage", "content_usage", "Content-Usage header")
    assert evidence(row(crawled, "a", "/img/on-noml-page.jpg")) == ("noai", "noai", "X-Robots-Tag", "noml")
    assert evidence(row(crawled, "a", "/img/on-meta-noml-page.jpg")) == ("noai", "noai", "meta robots", "index, noml")
    for path in ("/img/on-cu-header-page.jpg", "/img/on-noml-page.jpg", "/img/on-meta-noml-page.jpg"):
        assert a.requested(path) == 0, path


def test_ai_txt(crawled):
    b = crawled["hosts"]["b"]
    assert evidence(crawled["rows"][b.url("/x.png")]) == ("ai_txt", "ai_txt", "ai.txt", "Disallow: *.png")
    assert b.requested("/x.png") == 0
    assert crawled["rows"][b.url("/y.jpg")]["status"] == "ok"  # and the broken tdmrep.json changed nothing


def test_robots_content_signal_per_user_agent_group(crawled):
    c, d = crawled["hosts"]["c"], crawled["hosts"]["d"]
    r = crawled["rows"][c.url("/z.jpg")]
    assert evidence(r) == ("content_signal", "content_signal", "robots.txt", "Content-Signal: search=yes, ai-train=no")
    assert c.requested("/z.jpg") == 0
    assert crawled["rows"][d.url("/w.jpg")]["status"] == "ok"  # another agent's signal; an HTML ai.txt


def test_robots_refusal_keeps_its_rule(crawled):
    r = row(crawled, "a", "/private/p.jpg")
    assert evidence(r) == ("robots", "robots", "robots.txt", "Disallow: /private/")
    assert row(crawled, "a", "/img/plain.jpg")["opt_out_signal"] is None


def test_stats_count_pages_and_images_by_signal(crawled):
    stats = crawled["stats"]
    assert stats["pages"] == {"ok": 3, "tdmrep": 2, "content_usage": 2, "noai": 2}
    assert stats["images"] == {"ok": 7, "tdmrep": 3, "content_usage": 3, "content_signal": 1, "ai_txt": 1, "noai": 3,
                               "robots": 1}
    assert stats["images_total"] == len(crawled["rows"]) and stats["pending"] == 0


def test_url_list_refused_by_tdmrep_requests_nothing_and_reads_the_file_once(tmp_path, site):
    """Many concurrent first requests for one host: all wait for its files, which are read once."""
    site.add("/.well-known/tdmrep.json", '[{"location": "/", "tdm-reservation": 1}]', content_type="application/json")
    urls = [site.add(f"/img/{i}.jpg", jpeg(pattern=i + 1), content_type=IMG) for i in range(20)]
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    run_cli("download", str(tmp_path / "urls.txt"), "--work", str(tmp_path / "w"), "--allow-private-addresses",
            "--concurrency", "16", "--per-host-concurrency", "16", check=True)
    rows = by_url(crawl_rows(tmp_path / "w"))
    assert {r["status"] for r in rows.values()} == {"tdmrep"} and len(rows) == 20
    assert not [e.path for e in site.log if e.path.startswith("/img/")]
    assert [site.requested(p) for p in POLICY_FILES] == [1, 1, 1]


def test_ignore_robots_still_obeys_the_usage_rules_in_robots_txt(tmp_path, site):
    """--ignore-robots lifts Disallow (for sites you own), not opt-outs: there is no --ignore-opt-outs."""
    site.add("/robots.txt", "User-agent: *\nDisallow: /\nContent-Signal: /signal/ ai-train=no\n", content_type="text/plain")
    urls = [site.add("/img/a.jpg", jpeg(pattern=1), content_type=IMG), site.add("/signal/b.jpg", jpeg(pattern=2), content_type=IMG)]
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    run_cli("download", str(tmp_path / "urls.txt"), "--work", str(tmp_path / "w"), "--allow-private-addresses",
            "--ignore-robots", check=True)
    rows = by_url(crawl_rows(tmp_path / "w"))
    assert rows[urls[0]]["status"] == "ok"
    assert evidence(rows[urls[1]]) == ("content_signal", "content_signal", "robots.txt", "Content-Signal: /signal/ ai-train=no")
    assert site.requested("/signal/b.jpg") == 0 and site.requested("/robots.txt") == 1
