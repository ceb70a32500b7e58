"""Name resolution that checks the address each connection actually uses (no DNS rebinding).

``PrivateAddressMiddleware`` resolves a host before its first request, but a name whose DNS
answer changes between that check and the connection (DNS rebinding) would slip past it.
Here the resolvers the HTTP clients connect with refuse non-public answers themselves:
:class:`GuardedAiohttpResolver` is the aiohttp connector's resolver (plugged in by
``crawler.upstream.AiohttpHandler``), :class:`GuardedTwistedResolver` Twisted's
(``TWISTED_DNS_RESOLVER``). A refused answer fails the request with :class:`PrivateAnswer`,
recorded as ``private_address``.

``--resolve HOST:ADDRESS`` (as curl's) pins names to addresses for the connection; pinned
addresses pass the same guard.
"""

from __future__ import annotations

import socket
from typing import Any, Sequence

from twisted.internet import defer
from twisted.internet.error import DNSLookupError

from .middlewares import address_allowed, parse_networks


#: host -> why its answer was refused, for this process's crawl. Twisted's name resolution turns
#: a resolver's failure into "no results" (the exception is lost), so the refusal is looked up
#: here by the request's host when its download fails (crawler/failures.py).
REFUSED: dict[str, str] = {}


def refusal_for(host: str | None) -> str | None:
    """Why ``host``'s answer was refused when connecting, or None."""
    return REFUSED.get(host.lower().rstrip(".")) if host else None


class PrivateAnswer(DNSLookupError):
    """A host name resolved to an address that is not public (nor allowed) at connection time.

    A ``DNSLookupError`` (and so an ``OSError``), so that both clients fail the connection the
    way they fail an unresolvable name; :func:`crawler.failures.failure_status` tells it apart.
    """


def parse_pins(values: Sequence[str]) -> dict[str, str]:
    """``["rebind.test:127.0.0.1", "[::1]" forms]`` -> ``{"rebind.test": "127.0.0.1"}``; ValueError for a bad one."""
    import ipaddress

    pins = {}
    for value in values:
        host, sep, address = value.rpartition(":") if value.count(":") == 1 else value.partition(":")
        address = address.strip("[]")
        if not sep or not host:
            raise ValueError(f"{value!r} is not HOST:ADDRESS")
        ipaddress.ip_address(address)
        pins[host.strip().lower().rstrip(".")] = address
    return pins


class Guard:
    """The check shared by both resolvers: ``guarded`` False means every address is allowed."""

    def __init__(self, guarded: bool, allowed: Sequence[str] = (), pins: dict[str, str] | None = None):
        self.guarded = guarded
        self.allowed = parse_networks(list(allowed))
        self.pins = pins or {}

    @classmethod
    def from_settings(cls, settings: Any) -> "Guard":
        return cls(
            not settings.getbool("CAPCRAWL_ALLOW_PRIVATE_ADDRESSES"),
            settings.getlist("CAPCRAWL_ALLOWED_NETWORKS"),
            parse_pins(settings.getlist("CAPCRAWL_RESOLVE")),
        )

    def check(self, host: str, addresses: Sequence[str]) -> None:
        if not self.guarded:
            return
        for address in addresses:
            if not address_allowed(address, self.allowed):
                why = f"{host} resolved to non-public address {address} when connecting"
                REFUSED[host.lower().rstrip(".")] = why
                raise PrivateAnswer(why)


class GuardedAiohttpResolver:
    """aiohttp's threaded resolver, with pinned names and the guard (an ``AbstractResolver``)."""

    def __init__(self, guard: Guard):
        from aiohttp.resolver import ThreadedResolver

        self.guard = guard
        self._inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[dict]:
        pinned = self.guard.pins.get(host.lower().rstrip("."))
        if pinned is not None:
            fam = socket.AF_INET6 if ":" in pinned else socket.AF_INET
            results = [{"hostname": host, "host": pinned, "port": port, "family": fam, "proto": 0,
                        "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV}]
        else:
            results = await self._inner.resolve(host, port, family)
        self.guard.check(host, [r["host"] for r in results])
        return results

    async def close(self) -> None:
        await self._inner.close()


def _twisted_base() -> type:
    from scrapy.resolver import CachingThreadedResolver

    return CachingThreadedResolver


class GuardedTwistedResolver(_twisted_base()):  # type: ignore[misc]
    """Scrapy's caching threaded resolver for Twisted's reactor, with pinned names and the guard."""

    guard: Guard

    @classmethod
    def from_crawler(cls, crawler: Any, reactor: Any) -> "GuardedTwistedResolver":
        resolver = super().from_crawler(crawler, reactor)
        resolver.guard = Guard.from_settings(crawler.settings)
        return resolver

    def getHostByName(self, name: str, timeout: Sequence[int] = ()) -> defer.Deferred:
        pinned = self.guard.pins.get(name.lower().rstrip("."))
        d = defer.succeed(pinned) if pinned is not None else super().getHostByName(name, timeout)

        def check(address: str) -> str:
            self.guard.check(name, [address])
            return address

        return d.addCallback(check)
