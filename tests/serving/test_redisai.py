"""RedisAI execution of stored versions. Needs a Redis server with the `ai` module:
set AIMQ_TEST_REDISAI_URL (e.g. redis://127.0.0.1:6380/0 for `docker run -p 6380:6379 redislabs/redisai`)."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import redis

from aimq_pipelines.onnx_export import export_onnx
from aimq_pipelines.synthetic import generate_listings
from aimq_pipelines.training import spec_from_data, train
from aimq_serving import redisai
from aimq_serving.model_store import ModelStore
from aimq_serving.predictor import LoadedModel
from tests.conftest import SAMPLES

REDISAI_URL = os.environ.get("AIMQ_TEST_REDISAI_URL")
pytestmark = pytest.mark.skipif(
    not REDISAI_URL,
    reason="AIMQ_TEST_REDISAI_URL is not set: RedisAI cannot be installed on this machine; "
    "point it at a Redis server with the ai module to run these tests",
)


@pytest.fixture(scope="module")
def ai_store() -> ModelStore:
    client = redis.Redis.from_url(REDISAI_URL)
    assert redisai.has_redisai(client), f"{REDISAI_URL} has no ai module"
    store = ModelStore(client, f"aimqtest-ai-{uuid.uuid4().hex[:8]}", b"k" * 32, 3)
    frame = generate_listings("A", 5_000)
    spec = spec_from_data(frame)
    trained = train(frame, spec, max_iter=100)
    version = store.put("A", export_onnx(trained.model, len(spec.columns)), trained.model, spec, trained.metrics, {})
    store.promote("A", version)
    yield store
    store.clear()


def test_version_is_stored_in_redisai_and_matches_onnx_runtime(ai_store: ModelStore) -> None:
    model = LoadedModel.from_stored(ai_store.get("A"))
    assert model.info.redisai
    rows = pd.read_excel(SAMPLES / "100_rows.xlsx", keep_default_na=False).query("model_group == 'A'")
    matrix, _, _ = model.spec.encode_frame(rows)
    np.testing.assert_allclose(model.predict_redisai(ai_store, matrix), model.predict_onnx(matrix), rtol=1e-5)


def test_concurrent_requests_each_get_their_own_answer(ai_store: ModelStore) -> None:
    model = LoadedModel.from_stored(ai_store.get("A"))
    frame = generate_listings("A", 200, seed=99)
    matrix, _, _ = model.spec.encode_frame(frame)
    expected = model.predict_onnx(matrix)
    with ThreadPoolExecutor(max_workers=32) as pool:
        got = list(pool.map(lambda i: model.predict_redisai(ai_store, matrix[i : i + 1])[0], range(len(matrix))))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
