"""capcrawl crawl/download options: one dataclass, validated once at start-up."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .http import HTTP_CLIENTS
from .imageproc import IMAGE_FORMATS, RESAMPLE_FILTERS, RESIZE_MODES, ImageOptions
from .records import ConfigError

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = "capcrawl/0.1 (+https://github.com/capcrawl/capcrawl; image-caption dataset builder)"
LIST_FORMATS = ("txt", "csv", "tsv", "parquet", "jsonl")


@dataclass
class CrawlConfig:
    work: str
    seeds: list[str] = field(default_factory=list)
    url_list: str | None = None  # URL-list mode when set
    input_format: str | None = None  # guessed from the extension when None
    url_col: str = "url"
    caption_col: str | None = None
    max_pages: int = 1000
    max_depth: int = 3
    allow_domains: list[str] = field(default_factory=list)
    user_agent: str = DEFAULT_USER_AGENT
    concurrency: int = 64
    per_host_concurrency: int = 8
    image_size: int = 256
    resize_mode: str = "keep_ratio"
    resize_only_if_bigger: bool = False
    resample: str = "area"
    image_format: str = "jpg"
    quality: int = 95
    min_image_size: int = 10
    max_image_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 89_478_485
    allow_private_addresses: bool = False
    ignore_robots: bool = False
    timeout: float = 20.0
    deadline: float = 0.0  # seconds for the whole run; 0 = none
    retries: int = 2
    max_retry_after: float = 120.0
    part_rows: int = 2000
    workers: int = 0  # image worker processes; 0 = one per core
    autothrottle: bool = True
    http_client: str = "aiohttp"  # crawler.http.HTTP_CLIENTS
    progress: bool = True

    @property
    def mode(self) -> str:
        return "list" if self.url_list else "crawl"

    def image_options(self) -> ImageOptions:
        return ImageOptions(
            image_size=self.image_size,
            resize_mode=self.resize_mode,
            image_format=self.image_format,
            quality=self.quality,
            min_image_size=self.min_image_size,
            max_pixels=self.max_pixels,
            resize_only_if_bigger=self.resize_only_if_bigger,
            resample=self.resample,
        )

    def validate(self) -> "CrawlConfig":
        """Raise ConfigError with one actionable sentence for the first bad option."""
        _positive("--max-pages", self.max_pages)
        _non_negative("--max-depth", self.max_depth)
        _positive("--concurrency", self.concurrency)
        _positive("--per-host-concurrency", self.per_host_concurrency)
        _positive("--image-size", self.image_size)
        _non_negative("--min-image-size", self.min_image_size)
        _positive("--max-image-bytes", self.max_image_bytes)
        _positive("--max-pixels", self.max_pixels)
        _positive("--timeout", self.timeout)
        _non_negative("--deadline", self.deadline)
        _non_negative("--retries", self.retries)
        _positive("--part-rows", self.part_rows)
        _non_negative("--workers", self.workers)
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"--quality must be between 1 and 100, got {self.quality}.")
        if self.resize_mode not in RESIZE_MODES:
            raise ConfigError(f"--resize-mode must be one of {', '.join(RESIZE_MODES)}, got {self.resize_mode!r}.")
        if self.resample not in RESAMPLE_FILTERS:
            raise ConfigError(f"--resample must be one of {', '.join(RESAMPLE_FILTERS)}, got {self.resample!r}.")
        if self.image_format not in IMAGE_FORMATS:
            raise ConfigError(f"--image-format must be one of {', '.join(IMAGE_FORMATS)}, got {self.image_format!r}.")
        if not self.user_agent.strip():
            raise ConfigError("--user-agent must not be empty; name your crawler and a contact URL.")
        if self.http_client not in HTTP_CLIENTS:
            raise ConfigError(f"--http-client must be one of {', '.join(HTTP_CLIENTS)}, got {self.http_client!r}.")
        if self.per_host_concurrency > self.concurrency:
            self.per_host_concurrency = self.concurrency
        for d in self.allow_domains:
            if not d or "/" in d or " " in d:
                raise ConfigError(f"--allow-domain takes a host name such as example.com, got {d!r}.")
        if self.url_list:
            self._validate_list()
        else:
            self.seeds = expand_seeds(self.seeds)
        if self.ignore_robots:
            log.warning("!!! --ignore-robots: robots.txt will NOT be obeyed. Only do this for sites you own. !!!")
        return self

    def _validate_list(self) -> None:
        p = Path(self.url_list)
        if not p.is_file():
            raise ConfigError(f"URL list {self.url_list} does not exist or is not a file.")
        fmt = self.input_format or guess_format(p)
        if fmt not in LIST_FORMATS:
            raise ConfigError(
                f"cannot tell the format of {p.name}; pass --input-format with one of {', '.join(LIST_FORMATS)}."
            )
        self.input_format = fmt

    def scrapy_settings(self) -> dict[str, Any]:
        """Scrapy setting overrides for this configuration."""
        return {
            "USER_AGENT": self.user_agent,
            "ROBOTSTXT_OBEY": not self.ignore_robots,
            "CONCURRENT_REQUESTS": self.concurrency,
            "CONCURRENT_REQUESTS_PER_DOMAIN": self.per_host_concurrency,
            "AUTOTHROTTLE_ENABLED": self.autothrottle,
            "AUTOTHROTTLE_TARGET_CONCURRENCY": float(self.per_host_concurrency),
            "DOWNLOAD_TIMEOUT": self.timeout,
            "RETRY_TIMES": self.retries,
            "CLOSESPIDER_TIMEOUT": self.deadline,
            "CAPCRAWL_PROGRESS": self.progress,
            "CAPCRAWL_ALLOW_PRIVATE_ADDRESSES": self.allow_private_addresses,
            "CAPCRAWL_MAX_RETRY_AFTER": self.max_retry_after,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_spider_args(cls, kwargs: dict[str, Any]) -> "CrawlConfig":
        """Build from ``scrapy crawl images -a key=value`` strings (comma-separated lists)."""
        if "work" not in kwargs:
            raise ConfigError("pass the work directory: scrapy crawl images -a seeds=URL -a work=DIR")
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in kwargs.items():
            key = key.replace("-", "_")
            if key not in types:
                raise ConfigError(f"unknown spider argument {key!r}; known: {', '.join(sorted(types))}.")
            if not isinstance(raw, str):
                values[key] = raw
            elif "list" in str(types[key]):
                values[key] = [s for s in raw.split(",") if s]
            elif types[key] in ("int", int):
                values[key] = _parse(int, key, raw)
            elif types[key] in ("float", float):
                values[key] = _parse(float, key, raw)
            elif types[key] in ("bool", bool):
                values[key] = raw.lower() in ("1", "true", "yes", "on")
            else:
                values[key] = raw
        return cls(**values).validate()


def _parse(kind: type, key: str, raw: str) -> Any:
    try:
        return kind(raw)
    except ValueError as e:
        raise ConfigError(f"{key} must be a number, got {raw!r}.") from e


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be greater than 0, got {value}.")


def _non_negative(name: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"{name} must be 0 or more, got {value}.")


def guess_format(path: Path) -> str | None:
    suffix = path.suffix.lower().lstrip(".")
    return {"txt": "txt", "csv": "csv", "tsv": "tsv", "parquet": "parquet", "jsonl": "jsonl", "json": "jsonl"}.get(suffix)


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be crawled, or None when it is a usable http(s) URL."""
    try:
        parts = urlsplit(url)
    except ValueError as e:
        return f"unparsable URL: {e}"
    if parts.scheme not in ("http", "https"):
        return f"not an http(s) URL: {url[:80]}"
    if not parts.hostname:
        return f"no host in URL: {url[:80]}"
    return None


def expand_seeds(seeds: list[str]) -> list[str]:
    """URLs, and files of URLs (one a line, ``#`` comments), in order, without repeats."""
    out: list[str] = []
    for s in seeds:
        s = s.strip()
        if not s:
            continue
        if "://" not in s and os.path.exists(s):
            with open(s, encoding="utf-8") as fh:
                for line in fh:
                    line = line.split("#", 1)[0].strip()
                    if line:
                        out.append(line)
        elif "://" not in s:
            raise ConfigError(f"seed {s!r} is neither a URL (http://...) nor an existing file of URLs.")
        else:
            out.append(s)
    if not out:
        raise ConfigError("no seed URLs given; pass URLs or files listing them, one per line.")
    for url in out:
        if why := check_url(url):
            raise ConfigError(f"bad seed URL: {why}.")
    return list(dict.fromkeys(out))
