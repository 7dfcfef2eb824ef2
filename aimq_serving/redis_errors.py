"""Redis connection failures as the exception of the store that met them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis


@contextmanager
def redis_available(unavailable: type[Exception], store: str) -> Iterator[None]:
    """Turn redis connection failures into ``unavailable``, with a message a person can act on
    ("<store> unavailable (Redis): <why>"); each store keeps its own exception type."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise unavailable(f"{store} unavailable (Redis): {exc}") from exc
