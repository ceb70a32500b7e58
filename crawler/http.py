"""The HTTP client capcrawl downloads with (``--http-client``).

``aiohttp`` (the default): Scrapy's aiohttp download handler on a plain asyncio event loop,
with no Twisted reactor. On bench/vs_img2dataset.sh's 3,000 images it cost the crawl
process ~18% less CPU than Twisted's HTTP/1.1 client (4.1 vs 5.0 CPU s): the response
parser is aiohttp's C one, and no Deferred chain sits under every request.

``twisted``: Scrapy's classic HTTP/1.1 handler on the asyncio Twisted reactor, one flag away
for anything the aiohttp path gets wrong.

Scrapy 2.19 ships the aiohttp handler under a private module name and calls it
experimental (:mod:`crawler.upstream` holds capcrawl's subclass). capcrawl's whole test
suite (real servers on loopback: redirects, retries, Retry-After, robots.txt, timeouts,
refused connections, streaming size caps, Ctrl-C) runs through it, so its warning is not
repeated to users; if a Scrapy release moves the module, capcrawl says so once and uses
Twisted.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

HTTP_CLIENTS = ("aiohttp", "twisted")


def http_client_settings(client: str) -> dict[str, Any]:
    """Scrapy settings that select ``client``: the reactor switch and the http(s) handlers."""
    from .upstream import AIOHTTP_HANDLER, aiohttp_available

    if client == "aiohttp" and (why := aiohttp_available()) is not None:
        log.warning("Scrapy's aiohttp download handler is not available (%s); downloading with Twisted", why)
        client = "twisted"
    if client == "twisted":
        # No DOWNLOAD_HANDLERS of ours: Scrapy's own (Twisted HTTP/1.1) handlers.
        return {"TWISTED_REACTOR_ENABLED": True, "DOWNLOAD_HANDLERS": {}}
    return {"TWISTED_REACTOR_ENABLED": False, "DOWNLOAD_HANDLERS": {"http": AIOHTTP_HANDLER, "https": AIOHTTP_HANDLER}}
