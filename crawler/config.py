"""The crawl stage's options (``capcrawl crawl`` / ``download``): declared once, validated on construction."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from common.errors import ConfigError
from common.options import (
    CLUSTER_EXTRA,
    EXECUTORS,
    between,
    check_executor,
    check_fields,
    describe,
    from_strings,
    non_negative,
    option,
    optional,
    parse_size,
    positive,
    replace_frozen,
)

from .http import HTTP_CLIENTS
from .imageproc import IMAGE_FORMATS, RESAMPLE_FILTERS, RESIZE_MODES, ImageOptions

DEFAULT_USER_AGENT = "capcrawl/0.1 (+https://github.com/capcrawl/capcrawl; image-caption dataset builder)"
LIST_FORMATS = ("txt", "csv", "tsv", "parquet", "jsonl")

#: Options that only make sense when crawling pages from seeds, and only for URL lists.
CRAWL_ONLY = ("seeds", "max_pages", "max_depth", "allow_domains", "frontier", "worker_processes", "worker_id", "lease_timeout")
#: Options of a crawl cluster (crawler/frontier.py): workers sharing one frontier in Redis.
CLUSTER = ("frontier", "worker_processes", "worker_id", "lease_timeout")
#: The Ray executor (capcrawl/ray_executor.py) runs downloads of URL lists only.
LIST_ONLY = ("url_list", "input_format", "url_col", "caption_col", "executor", "ray_address", "shard_rows")

_SCOPE, _POLITE, _HTTP, _IMAGES, _SAFETY, _LIST = "crawl scope", "politeness", "downloads", "images", "safety", "URL list"
_CLUSTER = "many workers, one frontier (pip install 'capcrawl[cluster]')"
_RAY = "Ray executor (pip install 'capcrawl[cluster]')"


@dataclass(frozen=True)
class CrawlConfig:
    """Everything the crawl stage needs; invalid values raise ConfigError when it is built."""

    work: str = option(flag="--work", help="work directory (records go to WORK/crawl)", required=True)
    seeds: tuple[str, ...] = option((), "", "URL, or a text file of URLs (one a line, # comments)", metavar="SEED")
    url_list: str | None = option(None, "", "URL list: txt, csv, tsv, parquet or jsonl", metavar="URL_LIST")
    input_format: str | None = option(None, "--input-format", "format of the URL list (default: from its extension)",
                                      choices=LIST_FORMATS, group=_LIST)
    url_col: str = option("url", "--url-col", "URL column for csv/tsv/parquet/jsonl (default %(default)s)", group=_LIST)
    caption_col: str | None = option(None, "--caption-col", "caption column, kept as caption_in", group=_LIST)
    max_pages: int = option(1000, "--max-pages", "pages to fetch at most (default %(default)s)", check=positive, group=_SCOPE)
    max_page_bytes: int = option(10 * 1024 * 1024, "--max-page-bytes", "a larger HTML page is not read and is counted "
                                 "too_large (default 10MB)", parse=parse_size,
                                 check=positive, group=_SCOPE)
    max_depth: int = option(3, "--max-depth", "links from a seed, by the shortest path (default %(default)s)",
                            check=non_negative, group=_SCOPE)
    allow_domains: tuple[str, ...] = option((), "--allow-domain", "also follow links to D and its subdomains "
                                            "(repeatable); default scope: the seeds' hosts", action="append",
                                            metavar="D", group=_SCOPE)
    user_agent: str = option(DEFAULT_USER_AGENT, "--user-agent", "names capcrawl and a contact URL by default", group=_POLITE)
    concurrency: int = option(64, "--concurrency", "requests in flight (default %(default)s)", check=positive, group=_POLITE)
    per_host_concurrency: int = option(8, "--per-host-concurrency", "requests in flight per host (default %(default)s)",
                                       check=positive, group=_POLITE)
    autothrottle: bool = option(True, "--no-autothrottle", "switch AutoThrottle off", action="store_false", group=_POLITE)
    timeout: float = option(20.0, "--timeout", "seconds per download (default %(default)s)", check=positive, group=_HTTP)
    deadline: float = option(0.0, "--deadline", "stop the run after this many seconds; rerun to continue (0: none)",
                             check=non_negative, group=_HTTP)
    retries: int = option(2, "--retries", "retries for 5xx, 429 and timeouts (default %(default)s)", check=non_negative, group=_HTTP)
    max_retry_after: float = option(120.0, "--max-retry-after", "longest Retry-After wait honoured, in seconds "
                                    "(default %(default)s)", check=non_negative, group=_HTTP)
    http_client: str = option("aiohttp", "--http-client", "aiohttp on asyncio (default, less CPU) or Twisted's "
                              "HTTP/1.1 client", choices=HTTP_CLIENTS, group=_HTTP)
    allow_private_addresses: bool = option(False, "--allow-private-addresses", "allow hosts on private, loopback or "
                                           "link-local addresses (off: refused, status private_address)",
                                           action="store_true", group=_SAFETY)
    allow_addresses: tuple[str, ...] = option((), "--allow-address", "allow this private network or address only, "
                                              "e.g. 10.1.0.0/16 (repeatable)", action="append", metavar="CIDR", group=_SAFETY)
    resolve: tuple[str, ...] = option((), "--resolve", "connect to HOST at ADDRESS instead of asking DNS, as curl's "
                                      "--resolve (repeatable); the address must still be public or allowed",
                                      action="append", metavar="HOST:ADDRESS", group=_SAFETY)
    blocklist: str | None = option(None, "--blocklist", "a takedown blocklist (OUT/blocklist.jsonl, as `capcrawl remove` "
                                   "writes it): blocked pages and images are never requested, blocked bytes (sha256, "
                                   "pHash) are discarded; `run` applies OUT's own", metavar="FILE", group=_SAFETY)
    ignore_robots: bool = option(False, "--ignore-robots", "do NOT obey robots.txt (only for sites you own)",
                                 action="store_true", group=_SAFETY)
    image_size: int = option(256, "--image-size", "target size in pixels (default %(default)s)", check=positive, group=_IMAGES)
    resize_mode: str = option("keep_ratio", "--resize-mode", "as img2dataset's (default %(default)s)", choices=RESIZE_MODES,
                              group=_IMAGES)
    resize_only_if_bigger: bool = option(False, "--resize-only-if-bigger", "never upscale", action="store_true", group=_IMAGES)
    resample: str = option("area", "--resample", "area: pixel averaging when shrinking (as img2dataset), Lanczos when "
                           "enlarging (default)", choices=RESAMPLE_FILTERS, group=_IMAGES)
    image_format: str = option("jpg", "--image-format", "format of the stored images (default %(default)s)",
                               choices=tuple(IMAGE_FORMATS), group=_IMAGES)
    quality: int = option(95, "--quality", "JPEG/WebP quality (default %(default)s)", check=between(1, 100), group=_IMAGES)
    min_image_size: int = option(64, "--min-image-size", "images whose shorter side is smaller are too_small: icons, "
                                 "spacers, bullets (default %(default)s)", check=non_negative, group=_IMAGES)
    max_image_bytes: int = option(20 * 1024 * 1024, "--max-image-bytes", "cut larger bodies while streaming (default 20MB)",
                                  parse=parse_size, check=positive, group=_IMAGES)
    max_pixels: int = option(89_478_485, "--max-pixels", "more pixels is a decompression_bomb (default %(default)s)",
                             check=positive, group=_IMAGES)
    image_workers: int = option(0, "--image-workers", "image worker processes (default 0: one per core)",
                                check=non_negative, group=_IMAGES)
    part_rows: int = option(2000, "--part-rows", "rows per crawl part (default %(default)s)", check=positive, group=_IMAGES)
    frontier: str | None = option(None, "--frontier", "redis://HOST:PORT/DB: this process is one worker of a crawl whose "
                                  "frontier, seen-sets and resume state live in that Redis; every worker runs the same "
                                  "command", metavar="URL", group=_CLUSTER)
    worker_processes: int = option(0, "--workers", "start N worker processes here, sharing one frontier (without --frontier: a "
                          "private redis-server under WORK/redis for the run)", check=non_negative, metavar="N",
                          group=_CLUSTER)
    worker_id: int | None = option(None, "--worker-id", "this worker's number, in its part and journal names (default: "
                                   "the lowest one no live worker holds)", check=optional(between(0, 999)), metavar="K",
                                   group=_CLUSTER)
    lease_timeout: float = option(30.0, "--lease-timeout", "seconds without a heartbeat after which a worker counts as "
                                  "dead and its unfinished work returns to the queue (default %(default)s)",
                                  check=positive, group=_CLUSTER)
    executor: str = option("local", "--executor", "local: this process; ray: one Ray task per input shard of the list "
                           f"(needs {CLUSTER_EXTRA})", choices=EXECUTORS, group=_RAY)
    ray_address: str | None = option(None, "--ray-address", "Ray cluster to use (host:port, auto, ray://...); default: "
                                     "start a local Ray", metavar="ADDR", group=_RAY)
    shard_rows: int = option(10_000, "--shard-rows", "URLs per input shard, one Ray task each (default %(default)s)",
                             check=positive, group=_RAY)
    progress: bool = option(True, hidden=True, help="a progress line on a terminal")

    def __post_init__(self) -> None:
        check_fields(self)
        check_executor(self.executor, self.ray_address)
        if self.executor == "ray" and not self.url_list:
            raise ConfigError("--executor ray runs capcrawl download (URL lists); a crawl from seeds runs locally.")
        if not str(self.work).strip():
            raise ConfigError("--work must name a directory.")
        if not self.user_agent.strip():
            raise ConfigError("--user-agent must not be empty; name your crawler and a contact URL.")
        for d in self.allow_domains:
            if not d or "/" in d or " " in d:
                raise ConfigError(f"--allow-domain takes a host name such as example.com, got {d!r}.")
        from .middlewares import parse_networks

        try:
            parse_networks(self.allow_addresses)
        except ValueError as e:
            raise ConfigError(f"--allow-address takes a network or address such as 10.1.0.0/16 ({e}).") from e
        from .resolver import parse_pins

        try:
            parse_pins(self.resolve)
        except ValueError as e:
            raise ConfigError(f"--resolve takes HOST:ADDRESS such as example.test:203.0.113.7 ({e}).") from e
        if self.blocklist:
            from common.blocklist import BlockSet

            BlockSet.read(self.blocklist)  # a missing or malformed file is a one-line error now
        # per-host concurrency can never exceed the total
        replace_frozen(
            self,
            per_host_concurrency=min(self.per_host_concurrency, self.concurrency),
            allow_domains=tuple(d.lower().lstrip(".") for d in self.allow_domains),
        )
        if self.frontier is not None or self.worker_id is not None or self.worker_processes:
            _check_cluster(self)
        if self.url_list:
            replace_frozen(self, input_format=_validate_list(self.url_list, self.input_format, self.url_col, self.caption_col))
        else:
            replace_frozen(self, seeds=tuple(expand_seeds(self.seeds)))

    @property
    def cluster(self) -> bool:
        """This process is one worker of a crawl that keeps its frontier in Redis."""
        return self.frontier is not None

    @property
    def mode(self) -> str:
        return "list" if self.url_list else "crawl"

    @property
    def crawl_dir(self) -> Path:
        from common.layout import crawl_dir

        return crawl_dir(self.work)

    @property
    def workers(self) -> int:
        """Image worker processes to start."""
        return self.image_workers or max(1, os.cpu_count() or 1)

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

    def scrapy_settings(self) -> dict[str, Any]:
        """Scrapy setting overrides for this configuration."""
        from .optout import agent_token

        return {
            "USER_AGENT": self.user_agent,
            # robots.txt groups are matched on the product token alone (RFC 9309 2.2.1): given
            # the whole header, Protego took any group named by a word in it ("dataset").
            "ROBOTSTXT_USER_AGENT": agent_token(self.user_agent),
            "ROBOTSTXT_OBEY": not self.ignore_robots,
            "CONCURRENT_REQUESTS": self.concurrency,
            "CONCURRENT_REQUESTS_PER_DOMAIN": self.per_host_concurrency,
            "AUTOTHROTTLE_ENABLED": self.autothrottle,
            "AUTOTHROTTLE_TARGET_CONCURRENCY": float(self.per_host_concurrency),
            "DOWNLOAD_TIMEOUT": self.timeout,
            "DOWNLOAD_MAXSIZE": self.max_page_bytes,  # images: --max-image-bytes, per request
            "RETRY_TIMES": self.retries,
            "CLOSESPIDER_TIMEOUT": self.deadline,
            "CAPCRAWL_PROGRESS": self.progress,
            "CAPCRAWL_ALLOW_PRIVATE_ADDRESSES": self.allow_private_addresses,
            "CAPCRAWL_ALLOWED_NETWORKS": list(self.allow_addresses),
            "CAPCRAWL_MAX_RETRY_AFTER": self.max_retry_after,
            "CAPCRAWL_BLOCKLIST": self.blocklist,
            "CAPCRAWL_RESOLVE": list(self.resolve),
            "TWISTED_DNS_RESOLVER": "crawler.resolver.GuardedTwistedResolver",
        }

    def to_dict(self) -> dict[str, Any]:
        return describe(self)

    def replace(self, **changes: Any) -> "CrawlConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_spider_args(cls, kwargs: dict[str, Any]) -> "CrawlConfig":
        """Build from ``scrapy crawl images -a key=value`` strings (comma-separated lists)."""
        if "work" not in kwargs:
            raise ConfigError("pass the work directory: scrapy crawl images -a seeds=URL -a work=DIR")
        if set(kwargs) & set(CLUSTER):
            raise ConfigError("crawl workers (--frontier, --workers) run through `capcrawl crawl`, not `scrapy crawl`.")
        return from_strings(cls, kwargs)


def _check_cluster(config: CrawlConfig) -> None:
    """The cluster options fit together (the Redis URL's form; the client is checked when a worker starts)."""
    if config.url_list:
        raise ConfigError("--frontier, --workers and --worker-id are for `capcrawl crawl`; `download` runs as one process.")
    if config.frontier is not None:
        parts = urlsplit(config.frontier)
        if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
            raise ConfigError(f"--frontier takes a Redis URL such as redis://127.0.0.1:6379/0, got {config.frontier!r}.")
    if config.worker_id is not None and config.frontier is None:
        raise ConfigError("--worker-id needs --frontier (the Redis that the workers share).")
    if config.worker_processes and config.worker_id is not None:
        raise ConfigError("--workers starts its own workers and numbers them; leave out --worker-id.")


def guess_format(path: Path) -> str | None:
    suffix = path.suffix.lower().lstrip(".")
    return {"txt": "txt", "csv": "csv", "tsv": "tsv", "parquet": "parquet", "jsonl": "jsonl", "json": "jsonl"}.get(suffix)


def _validate_list(url_list: str, input_format: str | None, url_col: str, caption_col: str | None) -> str:
    """The list's format; fails at start-up (not mid-crawl) when the list or its columns are missing."""
    p = Path(url_list)
    if not p.is_file():
        raise ConfigError(f"URL list {url_list} does not exist or is not a file.")
    fmt = input_format or guess_format(p)
    if fmt not in LIST_FORMATS:
        raise ConfigError(f"cannot tell the format of {p.name}; pass --input-format with one of {', '.join(LIST_FORMATS)}.")
    from .urllist import validate_list

    validate_list(p, fmt, url_col, caption_col)
    return fmt


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be crawled, or None when it is a usable http(s) URL."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port out of range or not a number
    except ValueError as e:
        return f"unparsable URL: {e}"
    if parts.scheme not in ("http", "https"):
        return f"not an http(s) URL: {url[:80]}"
    if not parts.hostname:
        return f"no host in URL: {url[:80]}"
    return None


def expand_seeds(seeds: tuple[str, ...] | list[str]) -> list[str]:
    """URLs, and files of URLs (one a line, ``#`` comments), in order, without repeats."""
    out: list[str] = []
    for s in seeds:
        s = s.strip()
        if not s:
            continue
        if "://" not in s and os.path.exists(s):
            with open(s, encoding="utf-8-sig") as fh:
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
