"""The API's model cache against the real Redis: which version it serves after the store changes."""

from __future__ import annotations

import uuid

import redis

from aimq_serving.loaded_models import ModelCache
from aimq_serving.model_store import ModelStore


def test_a_version_number_reused_after_redis_lost_its_data_loads_the_new_model(
    trained_store: ModelStore, redis_client: redis.Redis
) -> None:
    """A Redis restarted without persistence numbers versions from 1 again after retraining: the
    cache must load the new version 1, not keep serving the old model under the same number."""
    source = trained_store.get("A")
    store = ModelStore(redis_client, f"aimqtest-cache-{uuid.uuid4().hex[:8]}", trained_store._key, 3)
    try:

        def put(metrics: dict) -> int:
            version = store.put("A", source.onnx, source.load_sklearn(), source.spec, metrics, {}, use_redisai=False)
            store.promote("A", version)
            return version

        assert put({"r2": 0.1}) == 1
        cache = ModelCache(store)
        old = cache.refresh_group("A")
        assert cache.refresh_group("A") is old  # nothing changed: nothing reloaded
        store.clear()  # the data is gone; retraining stores version 1 again
        assert put({"r2": 0.2}) == 1
        new = cache.refresh_group("A")
        assert new is not old and new.info.metrics == {"r2": 0.2}
    finally:
        store.clear()
