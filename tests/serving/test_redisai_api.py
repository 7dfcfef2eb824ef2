"""/predict/onnx executed by RedisAI, under concurrency. Needs a Redis server with the `ai` module:
set AIMQ_TEST_REDISAI_URL (e.g. redis://127.0.0.1:6380/0 for `docker run -p 6380:6379 redislabs/redisai`)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from aimq_pipelines.onnx_export import export_onnx
from aimq_pipelines.synthetic import generate_listings
from aimq_pipelines.training import spec_from_data, train
from aimq_serving import redisai, schema
from aimq_serving.model_store import ModelStore
from aimq_serving.predictor import LoadedModel
from aimq_serving.settings import AimqSettings
from tests.serving.support import distinct_records, server_env, uvicorn_server

REDISAI_URL = os.environ.get("AIMQ_TEST_REDISAI_URL")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not REDISAI_URL,
        reason="AIMQ_TEST_REDISAI_URL is not set: RedisAI cannot be installed on this machine; "
        "point it at a Redis server with the ai module to run these tests",
    ),
]


@pytest.fixture(scope="module")
def ai_settings(settings: AimqSettings) -> Iterator[AimqSettings]:
    ai = settings.model_copy(update={
        "redis_url": REDISAI_URL, "redis_prefix": f"aimqtest-aiapi-{uuid.uuid4().hex[:8]}", "predict_backend": "redisai",
    })
    store = ModelStore.from_settings(ai)
    assert redisai.has_redisai(store.client), f"{REDISAI_URL} has no ai module"
    for group in schema.MODEL_GROUPS:
        frame = generate_listings(group, 5_000)
        spec = spec_from_data(frame)
        trained = train(frame, spec, max_iter=100)
        version = store.put(group, export_onnx(trained.model, len(spec.columns)), trained.model, spec, trained.metrics, {})
        store.promote(group, version)
    yield ai
    store.clear()


def test_concurrent_requests_through_redisai_each_get_their_own_answer(
    ai_settings: AimqSettings, sample_records: list[dict[str, Any]]
) -> None:
    """The original demo shared one tensor key between requests: 12 of 100 concurrent requests
    got a wrong answer. Each request's tensors now live only inside its own DAG."""
    store = ModelStore.from_settings(ai_settings)
    models = {g: LoadedModel.from_stored(store.get(g)) for g in schema.MODEL_GROUPS}
    records = distinct_records(sample_records, 100)
    expected = [models[r["model_group"]].predict_onnx(models[r["model_group"]].spec.encode_records([r]))[0] for r in records]

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=100), timeout=60) as client:
            return await asyncio.gather(*(client.post("/predict/onnx", json=r) for r in records))

    with uvicorn_server(server_env(ai_settings), workers=2) as url:
        responses = asyncio.run(fire())
        metrics = httpx.get(f"{url}/metrics").text
    assert [r.status_code for r in responses] == [200] * len(records)
    np.testing.assert_allclose([r.json()["predicted_price"] for r in responses], expected, rtol=1e-5)
    assert 'backend="redisai"' in metrics
