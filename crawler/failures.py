"""Map download failures to capcrawl's named statuses."""

from __future__ import annotations

import asyncio
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


def failure_status(failure: Failure, page: bool) -> tuple[str, str] | None:
    """``(status, error)`` for a failed request; None when it was cancelled by shutdown."""
    exc = failure.value
    text = f"{type(exc).__name__}: {exc}"[:500]
    S = PageStatus if page else Status
    if too_large := failure.request.meta.get("cc_too_large") if failure.request is not None else None:
        return S.TOO_LARGE.value, too_large
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
