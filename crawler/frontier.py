"""The crawl frontier in Redis: many crawl workers, on any machines, crawling as one.

With ``--frontier redis://HOST:PORT/DB`` a crawl process is one worker. What a single process
keeps in memory and in its page journal lives here instead, so that every worker sees it:

``seen:i``          set of 8-byte digests of every image URL ever admitted (fetched once, by one worker)
``depth:p``         hash: page digest -> shortest link depth known (the pages admitted, for --max-pages)
``ref:STATUS``      sets of page digests refused as offsite, max_depth or max_pages (counted in stats)
``q:i``             list of image entries waiting (digest + the item's JSON), first in first out
``q:p``             sorted set of pages waiting (digest + URL), by depth then arrival: shallowest first
``q:r``             sorted set of parsed pages a shorter path reached later: their links are followed again
``lease:W``         hash: what worker W took and has not finished (kind byte + digest -> entry)
``commit:W:P``      hash: the leases of the rows of W's part P, recorded before the part is renamed
``commits:W``       set of the P that have a commit record
``alive:W``         W's token, expiring after ``--lease-timeout`` unless W's heartbeat renews it
``token:W``         the token of W's running incarnation; recovery deletes it (fencing)
``workers``         set of every worker id that registered
``h:HOST``          hash: ``last`` request start, ``delay`` (robots.txt Crawl-delay; absent until known),
                    ``until`` (Retry-After), all in ms of the Redis server's clock
``hf:HOST``         sorted set: the requests to HOST in flight (holder -> expiry)

An image URL is done once its row is in a renamed part, so its lease lasts until then: at a
part's flush its leases move to ``commit:W:P`` (atomically, and only while W's token is
valid), the part is renamed, and the record is deleted. A worker that stops heartbeating is
recovered by any other: its token is deleted (a late write of its is refused), for each
commit record its temporary part file is deleted first and the part looked for on disk (the
rename either happened, and the URLs are done, or can no longer happen, and they go back to
the queue), and its leases go back to the queues. A page is done once journaled.

redis-py is the optional extra ``capcrawl[cluster]``; nothing here imports it until a worker
connects, so the embedded (single process, no server) crawl never does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.fileio import remove_stale_temps
from common.layout import part_name

log = logging.getLogger(__name__)

#: Key prefix of everything a crawl keeps in its Redis database.
PREFIX = "capcrawl:"
#: The score of a waiting page: depth * SEQ_SPAN + arrival number (FIFO within a depth).
SEQ_SPAN = 1 << 32
#: Exit status of a worker that lost its frontier (BSD's EX_TEMPFAIL: try again later).
EXIT_FRONTIER_LOST = 75

INSTALL_HINT = "pip install 'capcrawl[cluster]'"
#: Token releases sent together: at most this many, at most this many seconds after the first.
RELEASE_BATCH, RELEASE_DELAY = 64, 0.002


class FrontierError(Exception):
    """The frontier cannot be used (Redis unreachable, the connection lost, this worker fenced).

    Nothing is lost: what this worker had not finished is still leased in Redis and returns
    to the queue; the same command run again resumes.
    """


def digest(url: str) -> bytes:
    """8 bytes naming a URL in the seen-sets and leases (64-bit: ~0.03 expected collisions in 10^9 URLs)."""
    return hashlib.blake2b(url.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def _redis_module() -> Any:
    try:
        import redis
        import redis.asyncio
        import redis.asyncio.retry
        import redis.backoff
        import redis.retry
    except ImportError as e:
        raise ConfigError(f"--frontier and --workers need the Redis client: {INSTALL_HINT} ({e}).") from e
    return redis


# --- Lua: each runs atomically in Redis ---------------------------------------------------

_REQUEUE = """
local function requeue(P, key)
  local kv = redis.call('HGETALL', key)
  for i = 1, #kv, 2 do
    local kind, v = string.sub(kv[i], 1, 1), kv[i + 1]
    if kind == 'i' then
      redis.call('LPUSH', P .. 'q:i', v)
    else
      local d = tonumber(redis.call('HGET', P .. 'depth:p', string.sub(kv[i], 2)) or 0)
      if kind == 'p' then
        redis.call('ZADD', P .. 'q:p', d * 4294967296 + redis.call('HINCRBY', P .. 'meta', 'seq', 1), v)
      else
        redis.call('ZADD', P .. 'q:r', d, v)
      end
    end
  end
  redis.call('DEL', key)
  return #kv / 2
end
"""

_FENCE_CHECK = """
local P, W, TOKEN = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', P .. 'token:' .. W) ~= TOKEN then return redis.error_reply('FENCED') end
local LEASE = P .. 'lease:' .. W
"""

SCRIPTS: dict[str, str] = {
    # ARGV: P, W, token, ttl_ms -> 1, or 0 when another live process holds the id
    "register": """
local P, W, TOKEN, TTL = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local cur = redis.call('GET', P .. 'alive:' .. W)
if cur and cur ~= TOKEN then return 0 end
redis.call('SET', P .. 'alive:' .. W, TOKEN, 'PX', TTL)
redis.call('SET', P .. 'token:' .. W, TOKEN)
redis.call('SADD', P .. 'workers', W)
return 1
""",
    # ARGV: P, W, token, ttl_ms -> 1 renewed, 0 fenced
    "beat": """
local P, W, TOKEN, TTL = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('GET', P .. 'token:' .. W) ~= TOKEN then return 0 end
redis.call('SET', P .. 'alive:' .. W, TOKEN, 'PX', TTL)
return 1
""",
    # ARGV: P, W, token: a clean exit frees the id at once
    "leave": """
local P, W, TOKEN = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', P .. 'token:' .. W) == TOKEN then
  redis.call('DEL', P .. 'token:' .. W, P .. 'alive:' .. W)
end
return 1
""",
    # ARGV: P, W -> 1 fenced (W is dead: no heartbeat), 0 alive
    "fence": """
local P, W = ARGV[1], ARGV[2]
if redis.call('EXISTS', P .. 'alive:' .. W) == 1 then return 0 end
redis.call('DEL', P .. 'token:' .. W)
return 1
""",
    # ARGV: P, W, part, exists(0/1) -> rows returned to the queue
    "settle": _REQUEUE + """
local P, W, PART, EXISTS = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = P .. 'commit:' .. W .. ':' .. PART
local n = 0
if EXISTS == '1' then redis.call('DEL', key) else n = requeue(P, key) end
redis.call('SREM', P .. 'commits:' .. W, PART)
return n
""",
    # ARGV: P, W -> entries returned to the queues
    "requeue_leases": _REQUEUE + """
return requeue(ARGV[1], ARGV[1] .. 'lease:' .. ARGV[2])
""",
    # ARGV: P, W, token, n -> flat list of (kind, entry, depth)
    "lease": _FENCE_CHECK + """
local n = tonumber(ARGV[4])
local out = {}
local r = redis.call('ZPOPMIN', P .. 'q:r', n)
for i = 1, #r, 2 do
  redis.call('HSET', LEASE, 'r' .. string.sub(r[i], 1, 8), r[i])
  table.insert(out, 'r'); table.insert(out, r[i]); table.insert(out, r[i + 1])
end
local k = n - #out / 3
if k > 0 then
  local imgs = redis.call('LPOP', P .. 'q:i', k)
  if imgs then
    for _, e in ipairs(imgs) do
      redis.call('HSET', LEASE, 'i' .. string.sub(e, 1, 8), e)
      table.insert(out, 'i'); table.insert(out, e); table.insert(out, 0)
    end
  end
end
k = n - #out / 3
if k > 0 then
  local ps = redis.call('ZPOPMIN', P .. 'q:p', k)
  for i = 1, #ps, 2 do
    local dig = string.sub(ps[i], 1, 8)
    redis.call('HSET', LEASE, 'p' .. dig, ps[i])
    table.insert(out, 'p'); table.insert(out, ps[i]); table.insert(out, redis.call('HGET', P .. 'depth:p', dig) or 0)
  end
end
return out
""",
    # ARGV: P, W, token, parent digest ('' for seeds), parent depth, max_depth, max_pages,
    #   n_images, (digest, entry, refused 0/1)*, n_links, (digest, member, onsite 0/1)*
    # -> {indexes (1-based) of the new refused images, which are leased to W; shorter paths found}
    "admit": _FENCE_CHECK + """
local parent, base = ARGV[4], tonumber(ARGV[5])
if parent ~= '' then
  local pd = redis.call('HGET', P .. 'depth:p', parent)
  if pd and tonumber(pd) < base then base = tonumber(pd) end
end
local d, maxd, maxp = base + 1, tonumber(ARGV[6]), tonumber(ARGV[7])
local refused, shorter = {}, 0
local i = 8
local nimg = tonumber(ARGV[i]); i = i + 1
for j = 1, nimg do
  local dig, entry, ref = ARGV[i], ARGV[i + 1], ARGV[i + 2]; i = i + 3
  if redis.call('SADD', P .. 'seen:i', dig) == 1 then
    if ref == '1' then
      redis.call('HSET', LEASE, 'i' .. dig, entry); table.insert(refused, j)
    else
      redis.call('RPUSH', P .. 'q:i', entry)
    end
  end
end
local nlinks = tonumber(ARGV[i]); i = i + 1
for j = 1, nlinks do
  local dig, member, onsite = ARGV[i], ARGV[i + 1], ARGV[i + 2]; i = i + 3
  local cur = redis.call('HGET', P .. 'depth:p', dig)
  if cur then
    if d < tonumber(cur) then
      shorter = shorter + 1
      redis.call('HSET', P .. 'depth:p', dig, d)
      if redis.call('ZSCORE', P .. 'q:p', member) then
        redis.call('ZADD', P .. 'q:p', d * 4294967296 + redis.call('HINCRBY', P .. 'meta', 'seq', 1), member)
      else
        redis.call('ZADD', P .. 'q:r', d, member)
      end
    end
  elseif onsite == '0' then
    redis.call('SADD', P .. 'ref:offsite', dig)
  elseif d > maxd then
    redis.call('SADD', P .. 'ref:max_depth', dig)
  elseif redis.call('HLEN', P .. 'depth:p') >= maxp then
    redis.call('SADD', P .. 'ref:max_pages', dig)
  else
    redis.call('SREM', P .. 'ref:max_depth', dig)
    redis.call('SREM', P .. 'ref:max_pages', dig)
    redis.call('HSET', P .. 'depth:p', dig, d)
    redis.call('ZADD', P .. 'q:p', d * 4294967296 + redis.call('HINCRBY', P .. 'meta', 'seq', 1), member)
  end
end
return {refused, shorter}
""",
    # ARGV: P, W, token, kind ('p' page, 'r' refollow), digest, parsed depth, member
    "done": _FENCE_CHECK + """
local dig = ARGV[5]
redis.call('HDEL', LEASE, ARGV[4] .. dig)
local cur = redis.call('HGET', P .. 'depth:p', dig)
if cur and tonumber(cur) < tonumber(ARGV[6]) then redis.call('ZADD', P .. 'q:r', tonumber(cur), ARGV[7]) end
return 1
""",
    # ARGV: P, W, token, part, fields... -> rows recorded, or FENCED
    "commit": _FENCE_CHECK + """
local key = P .. 'commit:' .. W .. ':' .. ARGV[4]
local n = 0
for i = 5, #ARGV do
  local v = redis.call('HGET', LEASE, ARGV[i])
  if v then redis.call('HSET', key, ARGV[i], v); redis.call('HDEL', LEASE, ARGV[i]); n = n + 1 end
end
redis.call('SADD', P .. 'commits:' .. W, ARGV[4])
return n
""",
    # ARGV: P, W, part
    "part_done": """
redis.call('DEL', ARGV[1] .. 'commit:' .. ARGV[2] .. ':' .. ARGV[3])
redis.call('SREM', ARGV[1] .. 'commits:' .. ARGV[2], ARGV[3])
return 1
""",
    # ARGV: P -> {images waiting, pages waiting, refollows waiting, leased, commit records, dead worker ids...}
    "status": """
local P = ARGV[1]
local out = {redis.call('LLEN', P .. 'q:i'), redis.call('ZCARD', P .. 'q:p'), redis.call('ZCARD', P .. 'q:r'), 0, 0}
for _, w in ipairs(redis.call('SMEMBERS', P .. 'workers')) do
  local l, c = redis.call('HLEN', P .. 'lease:' .. w), redis.call('SCARD', P .. 'commits:' .. w)
  out[4] = out[4] + l; out[5] = out[5] + c
  if (l > 0 or c > 0) and redis.call('EXISTS', P .. 'alive:' .. w) == 0 then table.insert(out, w) end
end
return out
""",
    # ARGV: P, host, limit, delay_ms (-1: this worker has not read the host's robots.txt), hold_ms,
    #   holders... -> {tokens granted (the first holders), ms to wait (-1: the host is full)}.
    #   Several at once only while the host has no Crawl-delay. A holder is "W|token|n": the
    #   token of a worker that is no longer alive (dead, or restarted since) frees its requests.
    "gate_acquire": """
local P, host = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local hk, fk = P .. 'h:' .. host, P .. 'hf:' .. host
redis.call('ZREMRANGEBYSCORE', fk, '-inf', now)
local n = redis.call('ZCARD', fk)
local st = redis.call('HMGET', hk, 'last', 'delay', 'until')
local delay, given = tonumber(st[2]), tonumber(ARGV[4])
if given >= 0 and (delay == nil or given > delay) then delay = given end
local limit = tonumber(ARGV[3])
if delay == nil then limit = 1 end
if n >= limit then
  -- full: free the requests of workers that are gone before saying so
  for _, h in ipairs(redis.call('ZRANGE', fk, 0, -1)) do
    local w, tok = string.match(h, '^([^|]*)|([^|]*)|')
    if w and redis.call('GET', P .. 'alive:' .. w) ~= tok then redis.call('ZREM', fk, h); n = n - 1 end
  end
  if n >= limit then return {0, -1} end
end
local ready = math.max((tonumber(st[1]) or 0) + (delay or 0), tonumber(st[3]) or 0)
if now < ready then return {0, ready - now} end
local k = math.min(#ARGV - 5, limit - n)
if delay == nil or delay > 0 then k = 1 end
local hold = now + tonumber(ARGV[5])
for i = 6, 5 + k do redis.call('ZADD', fk, hold, ARGV[i]) end
redis.call('PEXPIRE', fk, tonumber(ARGV[5]))
redis.call('HSET', hk, 'last', now)
if delay then redis.call('HSET', hk, 'delay', delay) end
redis.call('PEXPIRE', hk, 86400000)
return {k, 0}
""",
    # ARGV: P, host, holder, backoff_ms, delay_ms (robots.txt just read; -1 none)
    "gate_release": """
local P, host = ARGV[1], ARGV[2]
local hk = P .. 'h:' .. host
redis.call('ZREM', P .. 'hf:' .. host, ARGV[3])
local delay, backoff = tonumber(ARGV[5]), tonumber(ARGV[4])
if delay >= 0 then
  local cur = tonumber(redis.call('HGET', hk, 'delay'))
  if cur == nil or delay > cur then redis.call('HSET', hk, 'delay', delay) end
end
if backoff > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local cur = tonumber(redis.call('HGET', hk, 'until')) or 0
  if now + backoff > cur then redis.call('HSET', hk, 'until', now + backoff) end
end
redis.call('PEXPIRE', hk, 86400000)
return 1
""",
}


# --- what the worker gets back ---------------------------------------------------------------


@dataclass
class Leased:
    """One piece of work a worker took: an image to fetch (or to record), a page, or a refollow."""

    kind: str  # "i" image, "p" page, "r" page whose links are followed again from a shorter depth
    digest: bytes
    url: str
    depth: int = 0
    item: dict[str, Any] | None = None  # images: the row's fields so far (status set: already decided)


@dataclass
class Status:
    """What the frontier holds: waiting, leased, being committed; and dead workers holding work."""

    images: int
    pages: int
    refollows: int
    leased: int
    committing: int
    dead: list[str] = field(default_factory=list)

    @property
    def pending(self) -> int:
        return self.images + self.pages + self.refollows + self.leased

    @property
    def finished(self) -> bool:
        return self.pending == 0 and self.committing == 0


def image_entry(url: str, item: dict[str, Any]) -> bytes:
    """A waiting image: its digest, then the item (page, alt, context, licence...) as JSON."""
    return digest(url) + json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()


def page_member(url: str) -> bytes:
    return digest(url) + url.encode("utf-8", "surrogatepass")


def _decode_leased(kind: bytes, entry: bytes, depth: Any) -> Leased:
    k = kind.decode()
    if k == "i":
        item = json.loads(entry[8:])
        return Leased("i", entry[:8], item["url"], 0, item)
    return Leased(k, entry[:8], entry[8:].decode("utf-8", "surrogatepass"), int(float(depth)))


# --- the frontier ----------------------------------------------------------------------------------


class Frontier:
    """One worker's handle on the shared frontier: register, lease, admit, commit, recover, gate hosts.

    Registration, commits, recovery and the heartbeat use a blocking client (a part's commit is
    two round trips per thousands of rows; the heartbeat runs in its own thread); the per-URL
    calls made on the crawl's event loop use redis-py's asyncio client.
    """

    def __init__(self, url: str, crawl_dir: Path, lease_timeout: float = 30.0, worker_id: int | None = None,
                 prefix: str = PREFIX):
        self.url = url
        self.crawl_dir = Path(crawl_dir)
        self.lease_timeout = lease_timeout
        self.ttl_ms = max(1, int(lease_timeout * 1000))
        self.requested_id = worker_id
        self.worker_id: int | None = None
        self.prefix = prefix
        self.token = secrets.token_hex(8)
        self.failure: str | None = None  # why the frontier can no longer be used (set by any thread)
        self.ops = 0  # round trips to Redis made by this worker (benchmarks)
        self._redis = _redis_module()
        self._sync = self._client(self._redis.Redis)
        self._beat_client = self._client(self._redis.Redis)
        self._async: Any = None
        self._sync_scripts = {name: self._sync.register_script(src) for name, src in SCRIPTS.items()}
        self._beat_script = self._beat_client.register_script(SCRIPTS["beat"])
        self._async_scripts: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._releases: dict[str, list[str]] = {}  # host -> holders whose tokens go back in the next batch
        self._pending_releases = 0
        self._release_timer: Any = None
        self._tasks: set[Any] = set()

    def _client(self, cls: Any, asyncio: bool = False) -> Any:
        """A client whose every call ends within ~2 timeouts: a blip is retried twice, then it is an error."""
        from redis.backoff import ExponentialBackoff

        retry = (self._redis.asyncio.retry.Retry if asyncio else self._redis.retry.Retry)(ExponentialBackoff(1.0, 0.1), 2)
        timeout = max(5.0, min(30.0, self.lease_timeout))
        return cls.from_url(self.url, socket_timeout=timeout, socket_connect_timeout=5.0, retry=retry)

    @property
    def W(self) -> str:
        return str(self.worker_id)

    # --- errors ---------------------------------------------------------------------------

    def _lost(self, e: BaseException) -> FrontierError:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "FENCED" in msg:
            why = (f"worker {self.worker_id} was presumed dead (no heartbeat for {self.lease_timeout:g}s) and its work "
                   "was handed to the other workers")
        else:
            why = f"lost the frontier at {self.url} ({type(e).__name__}: {msg})"
        self.failure = self.failure or why
        return FrontierError(self.failure)

    def _sync_call(self, name: str, *args: Any) -> Any:
        self.ops += 1
        try:
            return self._sync_scripts[name](args=[self.prefix, *args])
        except self._redis.RedisError as e:
            raise self._lost(e) from e

    async def _call(self, name: str, *args: Any) -> Any:
        if self.failure:
            raise FrontierError(self.failure)
        if self._async is None:
            self._async = self._client(self._redis.asyncio.Redis, asyncio=True)
            self._async_scripts = {n: self._async.register_script(src) for n, src in SCRIPTS.items()}
        self.ops += 1
        try:
            return await self._async_scripts[name](args=[self.prefix, *args])
        except self._redis.RedisError as e:
            raise self._lost(e) from e

    def fenced(self) -> FrontierError:
        """The error of a worker whose work was handed to others (its part's rename found no file)."""
        return self._lost(RuntimeError("FENCED"))

    def check(self) -> None:
        """Raise FrontierError when the heartbeat or a call found the frontier unusable."""
        if self.failure:
            raise FrontierError(self.failure)

    # --- joining and leaving -----------------------------------------------------------------

    def connect(self, scope: str) -> int:
        """Reach Redis, check that it holds this crawl (or nothing yet), take a worker id and
        recover what an earlier process with that id left; start the heartbeat. Returns the id."""
        try:
            self._sync.ping()
        except self._redis.RedisError as e:
            raise FrontierError(f"cannot reach the frontier at {self.url} ({type(e).__name__}: {e}); start Redis "
                                "there or fix --frontier") from e
        self._check_scope(scope)
        deadline = time.monotonic() + self.lease_timeout + 5
        while True:
            candidates = [self.requested_id] if self.requested_id is not None else range(1000)
            for wid in candidates:
                if self._try_take(wid):
                    self.worker_id = wid
                    break
            if self.worker_id is not None and self._sync_call("beat", self.W, self.token, self.ttl_ms):
                break
            self.worker_id = None
            if time.monotonic() > deadline:
                raise FrontierError(f"worker id {self.requested_id} is held by a live worker on {self.url}; "
                                    "give this one another --worker-id")
            time.sleep(min(1.0, self.lease_timeout / 4))  # an earlier process with this id may still be timing out
        self._thread = threading.Thread(target=self._heartbeat, name=f"capcrawl-heartbeat-{self.W}", daemon=True)
        self._thread.start()
        return self.worker_id

    def _check_scope(self, scope: str) -> None:
        key = self.prefix + "meta"
        try:
            self._sync.hsetnx(key, "scope", scope)
            have = self._sync.hget(key, "scope")
        except self._redis.RedisError as e:
            raise self._lost(e) from e
        if have is not None and have.decode() != scope:
            raise ConfigError(f"the frontier at {self.url} belongs to a crawl with other seeds or scope options "
                              "(seeds, --max-pages, --max-depth, --allow-domain); give this crawl its own Redis "
                              "database (redis://HOST:PORT/N) or run it with the same options")

    def _try_take(self, wid: int) -> bool:
        """Take worker id ``wid`` if no live process holds it, and recover its previous incarnation."""
        with self._recovery_lock(str(wid)) as locked:
            if not locked:
                return False
            self.ops += 1
            try:
                ok = self._sync_scripts["register"](args=[self.prefix, str(wid), self.token, self.ttl_ms])
            except self._redis.RedisError as e:
                raise self._lost(e) from e
            if not ok:
                return False
            remove_stale_temps(self.crawl_dir, owned=_owned_by(wid))  # this id's leftovers: no other process writes them
            self._settle(str(wid))
            return True

    def _recovery_lock(self, wid: str) -> _Lock:
        return _Lock(self, self.prefix + "rec:" + wid, ttl_ms=120_000)

    def _settle(self, wid: str) -> int:
        """Resolve worker ``wid``'s commit records against the disk and requeue its leases."""
        requeued = 0
        try:
            parts = self._sync.smembers(f"{self.prefix}commits:{wid}")
        except self._redis.RedisError as e:
            raise self._lost(e) from e
        for raw in parts:
            index = int(raw)
            name = part_name(index, int(wid))
            # The temporary file first: a rename still to come then fails, so "not on disk" stays true.
            remove_stale_temps(self.crawl_dir, owned=lambda final, name=name: final == name)
            exists = (self.crawl_dir / name).is_file()
            requeued += self._sync_call("settle", wid, index, int(exists))
        requeued += self._sync_call("requeue_leases", wid)
        if requeued:
            log.warning("worker %s: %d unfinished URLs returned to the queue", wid, requeued)
        return requeued

    def recover(self, wid: str) -> int:
        """Hand a dead worker's unfinished work back to the queues (any live worker may do it)."""
        with self._recovery_lock(wid) as locked:
            if not locked or not self._sync_call("fence", wid):
                return 0
            remove_stale_temps(self.crawl_dir, owned=_owned_by(int(wid)))  # fenced: it can write nothing more
            return self._settle(wid)

    def _heartbeat(self) -> None:
        interval = max(0.05, self.lease_timeout / 4)
        while not self._stop.wait(interval):
            try:
                alive = self._beat_script(args=[self.prefix, self.W, self.token, self.ttl_ms])
            except self._redis.RedisError as e:
                self._lost(e)
                return
            if not alive:
                self.fenced()
                return

    def leave(self) -> None:
        """Stop the heartbeat and free the worker id (leases left behind are requeued first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.worker_id is None or self.failure:
            return
        try:
            self._sync_call("requeue_leases", self.W)
            self._sync_call("leave", self.W, self.token)
        except FrontierError:
            pass

    async def aclose(self) -> None:
        await self.flush_releases()
        if self._async is not None:
            try:
                await self._async.aclose()
            except Exception:
                log.debug("closing the frontier's async client failed", exc_info=True)
            self._async = None

    # --- work ----------------------------------------------------------------------------------

    async def admit(self, parent: str | None, parent_depth: int, max_depth: int, max_pages: int,
                    images: list[tuple[str, dict[str, Any], bool]], links: list[tuple[str, bool]]) -> tuple[list[int], int]:
        """Add a page's images and links (or the seeds, ``parent=None``) to the frontier.

        Images new to the seen-set are queued, or, when already refused (``True``: the page
        opted out, a bad URL), leased to this worker, which records them. Links become pages
        at the parent's depth + 1 (its current shortest depth in Redis), or are counted as
        refused. Returns the indexes of the new refused images and how many shorter paths
        to known pages were found.
        """
        args: list[Any] = [self.W, self.token, digest(parent) if parent else b"", parent_depth, max_depth, max_pages,
                           len(images)]
        for url, item, refused in images:
            args += [digest(url), image_entry(url, item), int(refused)]
        args.append(len(links))
        for url, onsite in links:
            args += [digest(url), page_member(url), int(onsite)]
        refused, shorter = await self._call("admit", *args)
        return [int(i) - 1 for i in refused], int(shorter)

    async def lease(self, n: int) -> list[Leased]:
        flat = await self._call("lease", self.W, self.token, n)
        return [_decode_leased(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]

    async def done(self, leased: Leased, parsed_depth: int) -> None:
        """A page (or refollow) is journaled: its lease ends (a shorter path found meanwhile queues a refollow)."""
        await self._call("done", self.W, self.token, leased.kind, leased.digest, parsed_depth, page_member(leased.url))

    def status(self) -> Status:
        """What the frontier holds now (one round trip; called while this worker is idle)."""
        out = self._sync_call("status")
        return Status(*(int(x) for x in out[:5]), dead=[w.decode() for w in out[5:]])

    def hand_back(self) -> int:
        """Return this worker's unfinished leases to the queues (a clean stop: no one waits for a timeout)."""
        return self._sync_call("requeue_leases", self.W)

    def commit_part(self, index: int, urls: list[str]) -> int:
        """Before part ``index`` is renamed: record that it holds these image URLs (their leases move to it)."""
        return self._sync_call("commit", self.W, self.token, index, *(b"i" + digest(u) for u in urls))

    def part_done(self, index: int) -> None:
        self._sync_call("part_done", self.W, index)

    def counts(self) -> dict[str, int]:
        """Pages refused by scope and limits (each counted once per URL)."""
        names = ("offsite", "max_depth", "max_pages")
        pipe = self._sync.pipeline(transaction=False)
        for name in names:
            pipe.scard(f"{self.prefix}ref:{name}")
        self.ops += 1
        try:
            return dict(zip(names, (int(v) for v in pipe.execute())))
        except self._redis.RedisError as e:
            raise self._lost(e) from e

    # --- per-host politeness --------------------------------------------------------------------

    async def gate_acquire(self, host: str, holders: list[str], limit: int, delay_ms: int,
                           hold_ms: int) -> tuple[int, int]:
        """Take tokens for the first of ``holders``: (how many were granted, ms to wait when none: -1 = full)."""
        granted, wait = await self._call("gate_acquire", host, limit, delay_ms, hold_ms, *holders)
        return int(granted), int(wait)

    async def gate_release(self, host: str, holder: str, backoff_ms: int, delay_ms: int) -> None:
        """Hand a host's token back. With a back-off (429/503) or a Crawl-delay just read a script
        records them at once; the others are handed back in batches a few ms later (one ZREM per
        host per batch: a round trip per request cost more CPU than the request itself on loopback)."""
        if backoff_ms > 0 or delay_ms >= 0:
            await self._call("gate_release", host, holder, backoff_ms, delay_ms)
        else:
            self.release_soon(host, holder)

    def release_soon(self, host: str, holder: str) -> None:
        self._releases.setdefault(host, []).append(holder)
        self._pending_releases += 1
        if self._pending_releases >= RELEASE_BATCH:
            self._flush_soon(0.0)
        elif self._release_timer is None:
            self._flush_soon(RELEASE_DELAY)

    def _flush_soon(self, delay: float) -> None:
        import asyncio

        if self._release_timer is not None:
            self._release_timer.cancel()
        loop = asyncio.get_running_loop()

        def flush() -> None:
            task = loop.create_task(self.flush_releases())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._release_timer = loop.call_later(delay, flush)

    async def flush_releases(self) -> None:
        """Send the batched token releases (one pipeline, one ZREM per host)."""
        self._release_timer = None
        batch, self._releases, self._pending_releases = self._releases, {}, 0
        if not batch or self.failure or self._async is None:
            return
        pipe = self._async.pipeline(transaction=False)
        for host, holders in batch.items():
            pipe.zrem(f"{self.prefix}hf:{host}", *holders)
        self.ops += 1
        try:
            await pipe.execute()
        except self._redis.RedisError as e:
            self._lost(e)  # the worker stops at its next look; the tokens lapse with its heartbeat

    # --- shared files --------------------------------------------------------------------------

    def locked(self, name: str, ttl_ms: int = 60_000) -> _Lock:
        """A cluster-wide lock (for writing the aggregate stats.json)."""
        return _Lock(self, self.prefix + "lock:" + name, ttl_ms=ttl_ms, wait=ttl_ms / 1000)


def _owned_by(worker: int) -> Callable[[str], bool]:
    """Temporary files of ``worker``'s parts (and only those)."""
    from common.layout import parse_part_name

    def owned(final: str) -> bool:
        parsed = parse_part_name(final)
        return parsed is not None and parsed[0] == worker

    return owned


class _Lock:
    """``SET key token NX PX ttl``; released only by its holder. Waits up to ``wait`` seconds."""

    _RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

    def __init__(self, frontier: Frontier, key: str, ttl_ms: int, wait: float = 0.0):
        self.f, self.key, self.ttl_ms, self.wait = frontier, key, ttl_ms, wait
        self.value = secrets.token_hex(8)
        self.held = False

    def __enter__(self) -> bool:
        deadline = time.monotonic() + self.wait
        while True:
            self.f.ops += 1
            try:
                self.held = bool(self.f._sync.set(self.key, self.value, nx=True, px=self.ttl_ms))
            except self.f._redis.RedisError as e:
                raise self.f._lost(e) from e
            if self.held or time.monotonic() >= deadline:
                return self.held
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.held:
            try:
                self.f._sync.eval(self._RELEASE, 1, self.key, self.value)
            except self.f._redis.RedisError:
                pass  # it expires

