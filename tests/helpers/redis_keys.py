"""Keys of the test session's Redis by prefix: the trained models copied to a prefix (or a server) of
a test's own, and a prefix cleared when the test is done."""

from __future__ import annotations

import redis


def copy_models(
    client: redis.Redis, source_prefix: str, target_prefix: str, *, target: redis.Redis | None = None
) -> list[str]:
    """Copy every model-store key byte for byte (DUMP/RESTORE) to another prefix, or to another
    server (``target``); the copied keys. Signatures cover group, version and artifacts, not the
    prefix, so the copies verify: a test can promote or break them without touching the session's
    store, and needs no second training."""
    from aimq_serving import redisai

    # RedisAI model keys restore only into a server with the ai module (the suite's Redis may have it,
    # a fault test's private Redis has not): elsewhere they are left out, as the API's onnxruntime and
    # pickle backends never read them.
    skip_ai = target is not None and not redisai.has_redisai(target)
    copied = []
    for key in client.scan_iter(match=f"{source_prefix}:models:*", count=500):
        if skip_ai and client.type(key) == b"AI__MODEL":
            continue
        copied.append(target_prefix + key.decode()[len(source_prefix) :])
        (target or client).restore(copied[-1], 0, client.dump(key), replace=True)
    return sorted(copied)


def clear_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete every key under ``prefix``."""
    for key in client.scan_iter(match=f"{prefix}:*", count=500):
        client.delete(key)
