"""A rate limit shared by every worker, without a Redis round trip per request.

Each client key gets ``limit`` requests per window. The count lives in Redis (one key per client,
expiring with its window), so all workers and all servers of a deployment share it. A worker does
not ask Redis for every request: it leases a small batch of tokens at once (a Lua script takes at
most what is left of the window) and spends them locally until they run out or the window ends.

Guarantees: across all workers a client never gets more than ``limit`` requests in a window. A
worker may hold unspent tokens (``max_unspent``) when the client's window runs out elsewhere, so a
client can be refused slightly early (at most ``(workers - 1) * max_unspent(limit)`` requests; the
lease is 1% of the limit, capped at 100, so limits under 200 are exact). If Redis cannot be reached
the limiter refuses (503) rather than letting unlimited traffic through.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

# KEYS[1] the client's counter; ARGV: limit, tokens wanted, window in ms. Returns {tokens granted,
# ms left in the window, 1 if this call started the window}; a window starts at the client's first
# request.
_LEASE = """
local ttl = redis.call('PTTL', KEYS[1])
local started = 0
if ttl < 0 then
  redis.call('SET', KEYS[1], 0, 'PX', ARGV[3])
  ttl = tonumber(ARGV[3])
  started = 1
end
local used = tonumber(redis.call('GET', KEYS[1]))
local grant = math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) - used)
if grant > 0 then
  redis.call('INCRBY', KEYS[1], grant)
else
  grant = 0
end
return {grant, ttl, started}
"""

_MAX_LEASE = 100
# After a failed Redis call, refuse at once for this long instead of letting every request wait
# out its own timeout.
_BACKOFF_S = 1.0


def lease_size(limit: int) -> int:
    """Tokens a worker takes from Redis at once: 1% of the limit, at least 1, at most 100."""
    return max(1, min(_MAX_LEASE, limit // 100))


def max_unspent(limit: int) -> int:
    """The most tokens a worker can hold unspent: the next lease is taken in the background when a
    quarter of a lease is left, so requests do not wait for Redis (not for leases under 4 tokens,
    which keeps small limits exact)."""
    lease = lease_size(limit)
    return lease + lease // 4 - 1


class LimiterUnavailable(Exception):
    pass


@dataclass
class _Allowance:
    tokens: int
    expires: float  # time.monotonic() at which the window (and any unspent token) ends
    exhausted: bool


class RateLimiter:
    def __init__(self, redis_url: str, prefix: str, limit: int, window_s: float, timeout_s: float):
        self.limit = limit
        self.window_s = window_s
        self.lease = lease_size(limit)
        self._refill_below = self.lease // 4
        self._prefix = f"{prefix}:ratelimit:"
        self._window_ms = max(1, int(window_s * 1000))
        self._redis_url = redis_url
        self._timeout_s = timeout_s
        self._client: aioredis.Redis | None = None
        self._script: object | None = None
        self._local: dict[str, _Allowance] = {}
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._down_until = 0.0
        self._down_reason = ""
        self._next_sweep = 0.0

    async def start(self) -> None:
        """Open the Redis client on the serving event loop (asyncio connections belong to one loop).

        A restarted app starts clean: tokens and outages of its previous run say nothing about this one."""
        self._local.clear()
        self._pending.clear()
        self._down_until = 0.0
        self._client = aioredis.Redis.from_url(
            self._redis_url, socket_timeout=self._timeout_s, socket_connect_timeout=self._timeout_s
        )
        self._script = self._client.register_script(_LEASE)

    async def aclose(self) -> None:
        # A lease still in flight would fail on the closed client and count as a Redis outage.
        for pending in list(self._pending.values()):
            pending.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def check(self, client_key: str) -> float | None:
        """None if the request may go ahead, else the seconds until the client's window ends.

        Raises LimiterUnavailable when Redis cannot be asked and no leased token is left."""
        while True:
            now = time.monotonic()
            allowance = self._local.get(client_key)
            if allowance is not None and allowance.expires > now:
                if allowance.tokens > 0:
                    allowance.tokens -= 1
                    if allowance.tokens < self._refill_below and not allowance.exhausted:
                        self._leasing(client_key)  # in the background: this request goes ahead
                    return None
                if allowance.exhausted:
                    return allowance.expires - now
            # No token left: wait for the lease (concurrent requests share it), then look again.
            await asyncio.shield(self._leasing(client_key))

    def _leasing(self, client_key: str) -> asyncio.Future[None]:
        """The client's lease in flight, started if there is none: at most one per client and worker.

        Never a finished lease: between a lease finishing and its done-callback running, requests
        already scheduled in that loop iteration can spend all it granted, and awaiting a finished
        future does not yield, so ``check`` would spin forever and the callback that ends the spin
        would never run (a whole worker stuck at 100 % CPU; the load test found it)."""
        pending = self._pending.get(client_key)
        if pending is None or pending.done():
            pending = self._pending[client_key] = asyncio.ensure_future(self._lease(client_key))
            pending.add_done_callback(lambda future, key=client_key: self._lease_done(key, future))
        return pending

    def _lease_done(self, client_key: str, future: asyncio.Future[None]) -> None:
        if self._pending.get(client_key) is future:  # a newer lease may have replaced it
            del self._pending[client_key]
        if not future.cancelled():
            future.exception()  # a background lease's failure is already recorded in _down_until

    async def _lease(self, client_key: str) -> None:
        now = time.monotonic()
        if now < self._down_until:
            raise LimiterUnavailable(self._down_reason)
        if now >= self._next_sweep:
            self._sweep(now)
        key = self._prefix + hashlib.sha256(client_key.encode()).hexdigest()[:32]
        try:
            granted, ttl_ms, started = await self._script(keys=[key], args=[self.limit, self.lease, self._window_ms])  # type: ignore[misc, operator]
        except (redis.RedisError, OSError) as exc:
            self._down_reason = f"rate limiter unavailable (Redis): {exc}"
            self._down_until = time.monotonic() + _BACKOFF_S
            raise LimiterUnavailable(self._down_reason) from exc
        # Measured from before the call, so a leased token never outlives its window.
        expires = now + int(ttl_ms) / 1000
        allowance = self._local.get(client_key)
        if allowance is None or allowance.expires <= now or started:
            # Tokens left from an earlier window were counted there; they do not carry over.
            allowance = self._local[client_key] = _Allowance(0, expires, False)
        allowance.tokens += int(granted)
        allowance.expires = expires
        allowance.exhausted = int(granted) == 0

    def _sweep(self, now: float) -> None:
        """Forget clients whose window has ended, so the table does not grow with every address."""
        for key in [k for k, a in self._local.items() if a.expires <= now]:
            del self._local[key]
        self._next_sweep = now + self.window_s

    @staticmethod
    def retry_after(seconds: float) -> int:
        return max(1, math.ceil(seconds))
