"""The model store and predictor on a RedisAI server (compose and k8s deploy Redis 6.2.5 + RedisAI 1.2.7
on ONNX Runtime 1.11). No RedisAI server comes from a package registry, so these run only against one
someone gives: AIMQ_TEST_REDISAI_URL (any Redis with the `ai` module), or AIMQ_REDISAI_DIST (a folder of
the tarballs, which `./dev test` starts with scripts/redisai-test-server.sh). Elsewhere they skip."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pandas as pd
import pytest
import redis

from aimq_pipelines.models.onnx_export import export_onnx
from aimq_pipelines.models.synthetic import generate_listings
from aimq_pipelines.models.training import TrainedModel, spec_from_data, train
from aimq_serving import redisai
from aimq_serving.loaded_models import LoadedModel, ModelCache
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings
from tests.helpers.paths import SAMPLES

REDISAI_URL = os.environ.get("AIMQ_TEST_REDISAI_URL")
NO_REDISAI = (
    "no RedisAI server given: no package registry has one; set AIMQ_TEST_REDISAI_URL to a Redis with the ai "
    "module, or AIMQ_REDISAI_DIST to a folder of Redis 6.2.5 + RedisAI 1.2.7 tarballs for ./dev test to start"
)
pytestmark = pytest.mark.skipif(not REDISAI_URL, reason=NO_REDISAI)


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    frame = generate_listings("A", 5_000)
    return train(frame, spec_from_data(frame), max_iter=100)


def _put(store: ModelStore, trained: TrainedModel, onnx_bytes: bytes | None = None) -> int:
    onnx_bytes = onnx_bytes or export_onnx(trained.model, len(trained.spec.columns))
    return store.put("A", onnx_bytes, trained.model, trained.spec, trained.metrics, {})


@pytest.fixture
def ai_store() -> Iterator[ModelStore]:
    client = redis.Redis.from_url(REDISAI_URL)
    assert redisai.has_redisai(client), f"{REDISAI_URL} has no ai module"
    store = ModelStore(client, f"aimqtest-ai-{uuid.uuid4().hex[:8]}", b"k" * 32, 3)
    yield store
    store.clear()


def test_version_is_stored_in_redisai_and_matches_onnx_runtime(ai_store: ModelStore, trained: TrainedModel) -> None:
    ai_store.promote("A", _put(ai_store, trained))
    model = LoadedModel.from_stored(ai_store.get("A"))
    assert model.info.redisai and ai_store.redisai_model_exists("A", model.version)
    rows = pd.read_excel(SAMPLES / "100_rows.xlsx", keep_default_na=False).query("model_group == 'A'")
    matrix, _, _ = model.spec.encode_frame(rows)
    np.testing.assert_allclose(model.predict_redisai(ai_store, matrix), model.predict_onnx(matrix), rtol=1e-5)


def test_200_concurrent_requests_each_get_their_own_answer(ai_store: ModelStore, trained: TrainedModel) -> None:
    ai_store.promote("A", _put(ai_store, trained))
    model = LoadedModel.from_stored(ai_store.get("A"))
    matrix, _, _ = model.spec.encode_frame(generate_listings("A", 200, seed=99))
    expected = model.predict_onnx(matrix)
    with ThreadPoolExecutor(max_workers=32) as pool:
        got = list(pool.map(lambda i: model.predict_redisai(ai_store, matrix[i : i + 1])[0], range(len(matrix))))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_a_model_redisai_refuses_is_not_stored_and_the_current_version_stays(
    ai_store: ModelStore, trained: TrainedModel
) -> None:
    good = _put(ai_store, trained)
    ai_store.promote("A", good)
    proto = onnx.load_from_string(export_onnx(trained.model, len(trained.spec.columns)))
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = 17  # what AIMQ exported before: ONNX Runtime 1.11 supports ai.onnx up to 16
    with pytest.raises(redisai.ModelRefused, match="Current official support for domain ai.onnx is till opset 16"):
        _put(ai_store, trained, proto.SerializeToString())
    assert ai_store.version_numbers("A") == [good]
    assert ai_store.current_version("A") == good


def test_promotion_and_rollback_switch_the_ai_model_and_pruning_deletes_its_key(
    ai_store: ModelStore, trained: TrainedModel
) -> None:
    other_frame = generate_listings("A", 5_000, seed=5)
    other = train(other_frame, spec_from_data(other_frame), max_iter=20)
    first = _put(ai_store, trained)
    second = ai_store.put(
        "A", export_onnx(other.model, len(other.spec.columns)), other.model, other.spec, other.metrics, {}
    )
    cache = ModelCache(ai_store, redisai=True)
    matrix, _, _ = trained.spec.encode_frame(generate_listings("A", 20, seed=3))

    def answers() -> tuple[int, np.ndarray]:
        model = cache.refresh_group("A")
        return model.version, model.predict_redisai(ai_store, matrix)

    ai_store.promote("A", second)
    version, got = answers()
    assert version == second
    np.testing.assert_allclose(got, other.model.predict(matrix), rtol=1e-4)
    assert ai_store.rollback("A") == first
    version, got = answers()
    assert version == first
    np.testing.assert_allclose(got, trained.model.predict(matrix), rtol=1e-4)
    for _ in range(3):  # keep_versions is 3
        _put(ai_store, trained)
    pruned = ai_store.prune("A")
    assert second in pruned and first not in pruned  # the current version is never pruned
    assert not ai_store.redisai_model_exists("A", second)
    assert ai_store.redisai_model_exists("A", first)


def test_a_lost_ai_key_is_stored_again_from_the_signed_record(ai_store: ModelStore, trained: TrainedModel) -> None:
    ai_store.promote("A", _put(ai_store, trained))
    cache = ModelCache(ai_store, redisai=True)
    model = cache.refresh_group("A")
    matrix, _, _ = model.spec.encode_frame(generate_listings("A", 5, seed=4))
    expected = model.predict_onnx(matrix)
    # What RedisAI restarted without persistence looks like while the record survives.
    ai_store.client.delete(ai_store.redisai_key("A", model.version))
    np.testing.assert_allclose(model.predict_redisai(ai_store, matrix), expected, rtol=1e-5)  # a request restores it
    ai_store.client.delete(ai_store.redisai_key("A", model.version))
    assert set(cache.refresh_all()) == {"B", "C"}  # groups without a model; A had nothing left to fix
    assert ai_store.redisai_model_exists("A", model.version)  # the watcher's poll restores it too


def test_a_tampered_record_is_never_stored_in_redisai(ai_store: ModelStore, trained: TrainedModel) -> None:
    version = _put(ai_store, trained)
    ai_store.promote("A", version)
    model = LoadedModel.from_stored(ai_store.get("A"))
    ai_store.client.hset(f"{ai_store.prefix}:models:A:v:{version}", "onnx", b"tampered")
    ai_store.client.delete(ai_store.redisai_key("A", version))
    with pytest.raises(Exception, match="signature does not match"):
        model.ensure_in_redisai(ai_store)
    assert not ai_store.redisai_model_exists("A", version)


def test_redisai_on_a_database_other_than_0_is_refused(trained: TrainedModel) -> None:
    """RedisAI executes models only in db 0: on db 3 AI.MODELSTORE answers OK and every execution
    then fails with 'model key is empty'. The API refuses that configuration at start-up, and the
    store does not put models into RedisAI there."""
    url = REDISAI_URL.rsplit("/", 1)[0] + "/3"
    with pytest.raises(ValueError, match="needs AIMQ_REDIS_URL on database 0"):
        AimqSettings(redis_url=url, predict_backend="redisai")
    store = ModelStore(redis.Redis.from_url(url), f"aimqtest-ai3-{uuid.uuid4().hex[:8]}", b"k" * 32, 3)
    try:
        version = _put(store, trained)
        assert not store.info("A", version).redisai
        assert not store.client.exists(store.redisai_key("A", version))
        with pytest.raises(redisai.WrongDatabase, match="database 0"):
            store.put(
                "A",
                export_onnx(trained.model, len(trained.spec.columns)),
                trained.model,
                trained.spec,
                trained.metrics,
                {},
                use_redisai=True,
            )
    finally:
        store.clear()
