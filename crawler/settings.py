"""Scrapy settings for capcrawl (``scrapy crawl images`` and ``capcrawl crawl`` both use these).

capcrawl's own options live in :class:`crawler.config.CrawlConfig`; the spider turns them
into the overrides returned by ``CrawlConfig.scrapy_settings()``.
"""

from crawler.config import DEFAULT_USER_AGENT

BOT_NAME = "capcrawl"
SPIDER_MODULES = ["crawler.spiders"]
NEWSPIDER_MODULE = "crawler.spiders"

# A real, honest user agent; never a browser's.
USER_AGENT = DEFAULT_USER_AGENT
ROBOTSTXT_OBEY = True

CONCURRENT_REQUESTS = 64
CONCURRENT_REQUESTS_PER_DOMAIN = 8
DOWNLOAD_DELAY = 0
DOWNLOAD_TIMEOUT = 20
DOWNLOAD_MAXSIZE = 10 * 1024 * 1024  # pages; images get their own cap per request
DOWNLOAD_WARNSIZE = 0
REDIRECT_MAX_TIMES = 5
RETRY_ENABLED = True
RETRY_TIMES = 2
# 429 and 503 are handled by RetryAfterMiddleware, which honours Retry-After per host.
RETRY_HTTP_CODES = [500, 502, 504, 522, 524, 408]
COOKIES_ENABLED = False
TELNETCONSOLE_ENABLED = False
# Scrapy 2.19's RemoteControl runs Python sent to a local HTTP port and writes a job file to
# the user's profile: a door into the crawl that nobody asked for.
REMOTE_CONTROL_ENABLED = False
# HTTP through Scrapy's aiohttp handler on a plain asyncio loop, no Twisted reactor: less CPU
# per request (crawler/http.py). `capcrawl ... --http-client twisted` (or, for `scrapy crawl`,
# -s TWISTED_REACTOR_ENABLED=True -s DOWNLOAD_HANDLERS={}) goes back to Twisted's client.
TWISTED_REACTOR_ENABLED = False
DOWNLOAD_HANDLERS = {
    "http": "crawler.upstream.AiohttpHandler",
    "https": "crawler.upstream.AiohttpHandler",
}
# Requests with the same priority leave in the order they came (breadth first); pages are
# prioritised by -depth, so each page is reached by its shortest path first.
SCHEDULER_MEMORY_QUEUE = "scrapy.squeues.FifoMemoryQueue"
SCHEDULER_DISK_QUEUE = "scrapy.squeues.PickleFifoDiskQueue"
DEPTH_LIMIT = 0  # depth is capcrawl's own (--max-depth) so that it is counted per page
REACTOR_THREADPOOL_MAXSIZE = 20
# Scrapy starts CONCURRENT_ITEMS asyncio tasks for *every* callback result, even when the
# callback yields one item (each image response does): at the default 100 that task churn
# was a quarter of the reactor's CPU. Parallelism across responses is unaffected, and no
# callback yields more than one item that waits on anything (pages yield requests and
# refusals, which need no image work), so one is enough.
CONCURRENT_ITEMS = 1
LOG_LEVEL = "INFO"
# Scrapy checks each response's callback for a generator that returns a value, by reading
# its source and parsing it with ``ast``. Its cache is keyed on the bound method, a new
# object on every access, so the parse ran for every image: ~2% of the crawl process's CPU.
# capcrawl's callbacks return nothing: tests/test_extract.py runs the same check once.
WARN_ON_GENERATOR_RETURN_VALUE = False

AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 0.0
AUTOTHROTTLE_MAX_DELAY = 30.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 8.0

# Every middleware is a step on every request's path, so the ones with nothing to do here
# are off: HTTP auth (no credentials), Offsite (the spider keeps pages in scope itself and
# images may come from any public host), DownloaderStats (it renders each request as raw
# HTTP only to count its bytes; stats.json is built from the records), Depth (capcrawl
# counts depth itself, --max-depth) and MetaCopyDetection (a warning for spider authors).
# Together with the URL-list spider's own list (ImageListSpider.components_off) this took
# ~8% off the crawl process's CPU in bench/vs_img2dataset.sh.
DOWNLOADER_MIDDLEWARES = {
    "crawler.middlewares.PrivateAddressMiddleware": 50,
    "crawler.middlewares.BlocklistMiddleware": 60,
    "scrapy.downloadermiddlewares.offsite.OffsiteMiddleware": None,
    "scrapy.downloadermiddlewares.robotstxt.RobotsTxtMiddleware": None,
    "crawler.upstream.RobotsMiddleware": 100,
    # After robots.txt: refuses URLs opted out by tdmrep.json, ai.txt or robots.txt's
    # Content-Usage / Content-Signal rules, before they are requested (crawler/optout_middleware.py).
    "crawler.optout_middleware.OptOutMiddleware": 110,
    "scrapy.downloadermiddlewares.httpauth.HttpAuthMiddleware": None,
    "crawler.middlewares.RetryAfterMiddleware": 540,
    "scrapy.downloadermiddlewares.stats.DownloaderStats": None,
}
SPIDER_MIDDLEWARES = {
    "scrapy.spidermiddlewares.depth.DepthMiddleware": None,
    # It drops requests for URLs over 2,083 characters without a word: an image would have
    # no row. Servers answer what they cannot take (414, counted as http_414).
    "scrapy.spidermiddlewares.urllength.UrlLengthMiddleware": None,
    "scrapy.spidermiddlewares.metacopy.MetaCopyDetectionMiddleware": None,
}
ITEM_PIPELINES = {
    "crawler.pipelines.ImagePipeline": 300,
}
EXTENSIONS = {
    "scrapy.extensions.telnet.TelnetConsole": None,
    # The same, but it keeps the waits hosts ask for: Crawl-delay, Retry-After (crawler/middlewares.py).
    "scrapy.extensions.throttle.AutoThrottle": None,
    "crawler.upstream.PoliteAutoThrottle": 0,
    "crawler.progress.ProgressLine": 500,
}

# capcrawl keys (read by the spider through CrawlConfig when run via `scrapy crawl`)
CAPCRAWL_PROGRESS = True
