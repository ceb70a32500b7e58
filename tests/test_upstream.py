"""The upstream internals capcrawl overrides (crawler/upstream.py) are there, with the shapes it relies on."""

from __future__ import annotations

import pytest
from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.extensions.throttle import AutoThrottle

from common.errors import ConfigError
from crawler import upstream


def test_installed_versions_match_the_overrides():
    assert upstream.check_upstream() == []


@pytest.mark.parametrize("cls, name", [
    (RobotsTxtMiddleware, "process_request_2"),
    (RobotsTxtMiddleware, "robot_parser"),
    (RobotsTxtMiddleware, "_parse_robots"),
    (AutoThrottle, "_response_downloaded"),
    (AutoThrottle, "_get_slot"),
])
def test_a_changed_signature_is_reported_and_stops_the_crawl(monkeypatch, cls, name):
    def changed(self, something_else):  # what a future Scrapy might do
        return None

    monkeypatch.setattr(cls, name, changed)
    problems = upstream.check_upstream(optional=False)
    assert any(f"{cls.__name__}.{name}" in p for p in problems), problems
    from crawler.stage import check_upstream_or_fail

    with pytest.raises(ConfigError, match="scrapy>=2.19,<2.20"):
        check_upstream_or_fail()


def test_a_missing_method_is_reported(monkeypatch):
    monkeypatch.delattr(AutoThrottle, "_get_slot")
    assert "AutoThrottle._get_slot is gone" in upstream.check_upstream()


def test_another_scrapy_series_is_reported(monkeypatch):
    import scrapy

    monkeypatch.setattr(scrapy, "__version__", "2.20.0")
    assert any("2.20.0" in p for p in upstream.check_upstream(optional=False))


def test_the_aiohttp_handler_subclass_keeps_scrapys_contract():
    handler = upstream.AiohttpHandler
    assert handler.__name__ == "AiohttpHandler" and handler.experimental is False
    assert isinstance(handler.__dict__["_request_headers"], staticmethod)
    assert upstream.aiohttp_available() is None
