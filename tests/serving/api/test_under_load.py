"""A real uvicorn with 2 workers: concurrent requests each get their own answer, and a promotion
under load fails no request."""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from aimq_serving import schema
from aimq_serving.loaded_models import LoadedModel, predict_with_sklearn
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings
from tests.helpers.api_server import distinct_records, server_env, uvicorn_server
from tests.helpers.redis_keys import clear_prefix, copy_models

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def load_settings(api_settings: AimqSettings, redis_client: redis.Redis) -> Iterator[AimqSettings]:
    settings = api_settings.model_copy(update={"redis_prefix": api_settings.redis_prefix + "-load"})
    copy_models(redis_client, api_settings.redis_prefix, settings.redis_prefix)
    yield settings
    clear_prefix(redis_client, settings.redis_prefix)


@pytest.fixture(scope="module")
def load_store(load_settings: AimqSettings) -> ModelStore:
    return ModelStore.from_settings(load_settings)


@pytest.fixture(scope="module")
def server(load_settings: AimqSettings) -> Iterator[str]:
    with uvicorn_server(server_env(load_settings), workers=2) as url:
        yield url


def expected_onnx(store: ModelStore, records: list[dict[str, Any]]) -> tuple[np.ndarray, dict[str, int]]:
    models = {g: LoadedModel.from_stored(store.get(g)) for g in schema.MODEL_GROUPS}
    prices = np.array(
        [models[r["model_group"]].predict_onnx(models[r["model_group"]].spec.encode_records([r]))[0] for r in records]
    )
    return prices, {g: m.version for g, m in models.items()}


def _metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{"):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name) : line.rindex("}")]))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_200_concurrent_requests_each_get_their_own_answer(
    server: str, load_store: ModelStore, sample_records: list[dict[str, Any]]
) -> None:
    records = distinct_records(sample_records, 200)
    expected, versions = expected_onnx(load_store, records)
    before = httpx.get(f"{server}/metrics").text

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server, limits=limits, timeout=60) as client:
            return await asyncio.gather(*(client.post("/predict/onnx", json=r) for r in records))

    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * len(records)
    bodies = [r.json() for r in responses]
    assert [b["model_group"] for b in bodies] == [r["model_group"] for r in records]
    assert [b["model_version"] for b in bodies] == [versions[r["model_group"]] for r in records]
    np.testing.assert_allclose([b["predicted_price"] for b in bodies], expected, rtol=1e-6)

    # The metrics of both workers are summed (PROMETHEUS_MULTIPROC_DIR).
    after = httpx.get(f"{server}/metrics").text
    counted = _metric_sum(after, "aimq_predictions_total") - _metric_sum(before, "aimq_predictions_total")
    assert counted == len(records)


def test_200_concurrent_pickle_requests_get_exactly_their_one_record_answers(
    server: str, load_store: ModelStore, sample_records: list[dict[str, Any]]
) -> None:
    # Batched on each worker's sklearn thread, yet each answer is the one-record predict's, to the bit.
    records = distinct_records(sample_records, 200)
    stored = {g: load_store.get(g) for g in schema.MODEL_GROUPS}
    estimators = {g: s.load_sklearn() for g, s in stored.items()}
    expected = [
        float(predict_with_sklearn(estimators[r["model_group"]], stored[r["model_group"]].spec.encode_records([r]))[0])
        for r in records
    ]

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server, limits=limits, timeout=60) as client:
            return await asyncio.gather(*(client.post("/predict/pickle", json=r) for r in records))

    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * len(records)
    bodies = [r.json() for r in responses]
    assert [b["predicted_price"] for b in bodies] == expected
    assert [b["model_version"] for b in bodies] == [stored[r["model_group"]].info.version for r in records]


def test_a_promotion_under_load_fails_no_request(
    server: str, load_store: ModelStore, sample_records: list[dict[str, Any]]
) -> None:
    old = load_store.current_version("A")
    records = distinct_records(sample_records, 300)
    results: list[tuple[int, str, int | None]] = []
    stop = threading.Event()

    async def load() -> None:
        async with httpx.AsyncClient(base_url=server, timeout=30, limits=httpx.Limits(max_connections=16)) as client:

            async def worker(seed: int) -> None:
                rng = random.Random(seed)
                while not stop.is_set():
                    record = rng.choice(records)
                    response = await client.post(
                        rng.choice(["/predict/onnx", "/predict", "/predict/pickle"]), json=record
                    )
                    body = response.json()
                    version = body.get("model_version") if response.status_code == 200 else None
                    results.append((response.status_code, record["model_group"], version))

            await asyncio.gather(*(worker(i) for i in range(16)))

    loader = threading.Thread(target=lambda: asyncio.run(load()))
    loader.start()
    try:
        _wait_for(lambda: len(results) > 200)
        stored = load_store.get("A")
        new = load_store.put(
            "A",
            stored.onnx,
            stored.load_sklearn(),
            stored.spec,
            stored.info.metrics,
            {**stored.info.lineage, "note": "promoted under load by the tests"},
            use_redisai=False,
        )
        load_store.promote("A", new)
        seen = len(results)
        # Keep the load on until both workers have served the new version for a while.
        _wait_for(lambda: sum(1 for s, g, v in results[seen:] if g == "A" and v == new) > 200)
    finally:
        stop.set()
        loader.join(timeout=60)

    assert {status for status, _, _ in results} == {200}, [r for r in results if r[0] != 200][:5]
    assert {v for _, g, v in results if g == "A"} == {old, new}
    # Every worker swapped: fresh connections (spread over both workers) all get the new version.
    for _ in range(20):
        with httpx.Client(base_url=server) as client:
            assert client.post("/predict/onnx", json=records[0]).json()["model_version"] == new
    metrics = httpx.get(f"{server}/metrics").text
    assert _metric_sum(metrics, "aimq_model_loads_total", group="A", version=str(new)) == 2


def _wait_for(check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out waiting under load"
        time.sleep(0.05)
