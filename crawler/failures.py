"""Map download failures to capcrawl's named statuses."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urljoin, urlsplit

from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadCancelledError,
    DownloadConnectionRefusedError,
    DownloadFailedError,
    DownloadTimeoutError,
    IgnoreRequest,
    ResponseDataLossError,
)
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.internet import defer, error as txerror
from twisted.python.failure import Failure

from common.records import PageStatus, Status, http_status

from .middlewares import Blocked, PrivateAddressRefused
from .optout_middleware import OptedOut
from .resolver import PrivateAnswer, refusal_for
from .upstream import TWISTED_CONNECTION_ERRORS, RobotsForbidden

_TIMEOUTS = (DownloadTimeoutError, txerror.TimeoutError, txerror.TCPTimedOutError, defer.TimeoutError)
_DNS = (CannotResolveHostError, txerror.DNSLookupError)
_CONNECTION = (
    DownloadConnectionRefusedError,
    DownloadFailedError,
    ResponseDataLossError,
    txerror.ConnectionRefusedError,
    txerror.ConnectionLost,
    txerror.ConnectionDone,
    *TWISTED_CONNECTION_ERRORS,
)


def _private_answer(exc: BaseException) -> PrivateAnswer | None:
    """The resolver's refusal of a non-public address, wherever the client wrapped it."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, PrivateAnswer):
            return exc
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "os_error", None)
        seen += 1
    return None


def _unfollowed_redirect_scheme(response) -> str | None:
    """The scheme of a redirect's target that is not http(s) (``file``, ``ftp``, ``data``...):
    Scrapy does not follow it, and the URL it points to, not the server, is what went wrong."""
    if not 300 <= response.status < 400 or not (location := response.headers.get("Location")):
        return None
    try:
        scheme = urlsplit(urljoin(response.url, location.decode("latin-1").strip())).scheme.lower()
    except ValueError:
        return None
    return scheme if scheme and scheme not in ("http", "https") else None


#: Scrapy's and urllib's words for a URL that no Request can be made of.
_URL_ERRORS = ("Missing scheme in request url", "Invalid IPv6 URL", "Port out of range", "Port could not be cast",
               "Unsupported URL scheme")


def _decompressed_past_cap(exc: IgnoreRequest) -> bool:
    """Scrapy's HttpCompressionMiddleware gave up on a body that inflated past the size cap."""
    return type(exc.__cause__).__name__ == "_DecompressionMaxSizeExceeded" or "during decompression" in str(exc)


#: aiohttp names the TLS context even of a plain http connection: `ssl:<ssl.SSLContext object at 0x7f..>`.
_SSL_NOISE = re.compile(r" ssl:(?:<[^>]*>|default|True|False|None)")
#: What an exception that says nothing (Twisted's ResponseDataLossError) means.
_SILENT = {"ResponseDataLossError": "the connection closed before the whole body arrived"}


def _error_text(exc: BaseException) -> str:
    """``Type: message`` of a failure, without an object's address, at most 500 characters."""
    message = _SSL_NOISE.sub("", str(exc)) or _SILENT.get(type(exc).__name__, "")
    return f"{type(exc).__name__}: {message}"[:500]


def failure_status(failure: Failure, page: bool) -> tuple[str, str] | None:
    """``(status, error)`` for a failed request; None when it was cancelled by shutdown."""
    exc = failure.value
    text = _error_text(exc)
    S = PageStatus if page else Status
    if too_large := failure.request.meta.get("cc_too_large") if failure.request is not None else None:
        return S.TOO_LARGE.value, too_large
    if isinstance(exc, ValueError) and str(exc).startswith(_URL_ERRORS):
        # A redirect to a URL no request can be made for (javascript:, a bad port or IPv6
        # address): the listed URL was checked before it was requested, so its target is at fault.
        return S.BAD_URL.value, f"redirected to a URL that cannot be requested ({exc})"[:500]
    if isinstance(exc, IgnoreRequest) and _decompressed_past_cap(exc):
        return S.TOO_LARGE.value, text
    if isinstance(exc, HttpError):
        if scheme := _unfollowed_redirect_scheme(exc.response):
            return S.BAD_URL.value, f"HTTP {exc.response.status} to a {scheme}: URL, which is not fetched"
        return http_status(exc.response.status), f"HTTP {exc.response.status}"
    if isinstance(exc, RobotsForbidden):
        return S.ROBOTS.value, exc.detail
    if isinstance(exc, OptedOut):
        return S(exc.evidence.signal).value, str(exc)
    if isinstance(exc, PrivateAddressRefused):
        return S.PRIVATE_ADDRESS.value, str(exc)
    if isinstance(exc, Blocked):
        return S.BLOCKED.value, str(exc)
    if (answer := _private_answer(exc)) is not None:
        return S.PRIVATE_ADDRESS.value, str(answer)
    if isinstance(exc, _DNS) and failure.request is not None:
        from scrapy.utils.httpobj import urlparse_cached

        if (why := refusal_for(urlparse_cached(failure.request).hostname)) is not None:
            return S.PRIVATE_ADDRESS.value, why
    if isinstance(exc, (DownloadCancelledError, defer.CancelledError, asyncio.CancelledError)):
        if "max size" in str(exc) or "maxsize" in str(exc) or "larger than" in str(exc):
            return S.TOO_LARGE.value, str(exc)
        return None
    if isinstance(exc, _TIMEOUTS):
        return S.TIMEOUT.value, text
    if isinstance(exc, _DNS):
        return S.DNS_ERROR.value, text
    if isinstance(exc, _CONNECTION):
        return S.CONNECTION_ERROR.value, text
    if isinstance(exc, IgnoreRequest):
        return S.IGNORED.value, text
    return S.DOWNLOAD_ERROR.value, text
