"""/predict/pickle's one scikit-learn thread: concurrent requests batched per model get exactly
the answers of one-record predict calls, a bad request fails alone, a full queue is a 503."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import pytest

from aimq_serving import schema
from aimq_serving.api.app import create_app
from aimq_serving.api.sklearn_batcher import Overloaded, SklearnBatcher
from aimq_serving.loaded_models import predict_with_sklearn
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings
from tests.helpers.api_server import distinct_records


@pytest.fixture(scope="module")
def estimators(api_store: ModelStore) -> dict[str, tuple[Any, Any, int]]:
    """Per group: (estimator, feature spec, version) straight from the store."""
    out = {}
    for group in schema.MODEL_GROUPS:
        stored = api_store.get(group)
        out[group] = (stored.load_sklearn(), stored.spec, stored.info.version)
    return out


def busy_rows(spec: Any, sample_records: list[dict[str, Any]]) -> np.ndarray:
    """Group A rows enough to keep the sklearn thread busy for a while (~0.1-1 s)."""
    records = [r for r in distinct_records(sample_records, 600) if r["model_group"] == "A"]
    return np.tile(spec.encode_records(records), (100, 1))


def one_record_price(estimators: dict[str, tuple[Any, Any, int]], record: dict[str, Any]) -> float:
    estimator, spec, _ = estimators[record["model_group"]]
    return float(predict_with_sklearn(estimator, spec.encode_records([record]))[0])


def test_a_batch_prices_every_row_exactly_as_its_one_row_call(estimators, sample_records) -> None:
    # The property the batcher relies on (HistGradientBoosting sums each row's leaves on its own, in float64).
    records = distinct_records(sample_records, 300)
    for group, (estimator, spec, _) in estimators.items():
        matrix = spec.encode_records([r for r in records if r["model_group"] == group])
        batch = predict_with_sklearn(estimator, matrix)
        single = np.array([predict_with_sklearn(estimator, matrix[i : i + 1])[0] for i in range(len(matrix))])
        assert np.array_equal(batch, single), group


def test_concurrent_callers_each_get_their_own_rows_back(estimators, sample_records) -> None:
    records = distinct_records(sample_records, 240)
    expected = [one_record_price(estimators, r) for r in records]

    async def run() -> list[float]:
        batcher = SklearnBatcher(max_queued_rows=10_000)
        try:

            async def one(record: dict[str, Any]) -> float:
                estimator, spec, _ = estimators[record["model_group"]]
                return float((await batcher.predict(estimator, spec.encode_records([record])))[0])

            return await asyncio.gather(*(one(r) for r in records))
        finally:
            batcher.close()

    assert asyncio.run(run()) == expected


def test_a_failing_request_fails_alone(estimators, sample_records) -> None:
    estimator, spec, _ = estimators["A"]
    big = busy_rows(spec, sample_records)
    good = big[:5]
    wrong_width = np.zeros((2, len(spec.columns) + 3), dtype=np.float32)

    async def run() -> list[Any]:
        batcher = SklearnBatcher(max_queued_rows=10**9)
        try:
            # The big call keeps the thread busy, so the next two are likely priced as one batch.
            return await asyncio.gather(
                batcher.predict(estimator, big),
                batcher.predict(estimator, wrong_width),
                batcher.predict(estimator, good),
                return_exceptions=True,
            )
        finally:
            batcher.close()

    big_prices, failed, good_prices = asyncio.run(run())
    assert isinstance(failed, ValueError) and "features" in str(failed)
    assert np.array_equal(good_prices, predict_with_sklearn(estimator, good))
    assert np.array_equal(big_prices, predict_with_sklearn(estimator, big))


def test_past_the_queue_bound_a_request_is_refused_at_once(estimators, sample_records) -> None:
    estimator, spec, _ = estimators["A"]
    busy = busy_rows(spec, sample_records)

    async def run() -> list[Any]:
        batcher = SklearnBatcher(max_queued_rows=10)
        try:
            # Whether or not the thread has taken ``busy`` yet, rows are waiting when the last one
            # comes, and 8 + 5 (or more) rows are over 10.
            return await asyncio.gather(
                batcher.predict(estimator, busy),
                batcher.predict(estimator, busy[:8]),
                batcher.predict(estimator, busy[:5]),
                return_exceptions=True,
            )
        finally:
            batcher.close()

    busy_prices, _, refused = asyncio.run(run())
    assert isinstance(refused, Overloaded) and "AIMQ_PICKLE_QUEUE_ROWS" in str(refused)
    assert np.array_equal(busy_prices, predict_with_sklearn(estimator, busy))


@asynccontextmanager
async def app_client(settings: AimqSettings) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=60) as client:
            yield client, app.state.services


def run_with_app(settings: AimqSettings, work: Callable[[httpx.AsyncClient, Any], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with app_client(settings) as (client, services):
            return await work(client, services)

    return asyncio.run(main())


def test_concurrent_pickle_requests_get_their_one_record_answers(api_settings, estimators, sample_records) -> None:
    records = distinct_records(sample_records, 150)
    expected = [one_record_price(estimators, r) for r in records]

    async def work(client: httpx.AsyncClient, services: Any) -> list[httpx.Response]:
        return await asyncio.gather(*(client.post("/predict/pickle", json=r) for r in records))

    responses = run_with_app(api_settings, work)
    assert [r.status_code for r in responses] == [200] * len(records)
    bodies = [r.json() for r in responses]
    assert [b["predicted_price"] for b in bodies] == expected  # exact, not approximately
    assert [b["model_group"] for b in bodies] == [r["model_group"] for r in records]
    assert [b["model_version"] for b in bodies] == [estimators[r["model_group"]][2] for r in records]


def test_a_full_queue_is_a_503_with_json_and_retry_after(api_settings, estimators, sample_records) -> None:
    settings = api_settings.model_copy(update={"pickle_queue_rows": 1})
    records = distinct_records(sample_records, 20)
    estimator, spec, _ = estimators["A"]
    busy = busy_rows(spec, sample_records)

    async def work(client: httpx.AsyncClient, services: Any) -> list[httpx.Response]:
        # The app's own sklearn thread is kept busy; meanwhile rows wait, and one more row is over 1.
        busy_call = asyncio.ensure_future(services.sklearn.predict(estimator, busy))
        responses = await asyncio.gather(*(client.post("/predict/pickle", json=r) for r in records))
        await busy_call
        return responses

    responses = run_with_app(settings, work)
    refused = [r for r in responses if r.status_code == 503]
    assert refused, [r.status_code for r in responses]
    for response in refused:
        assert "AIMQ_PICKLE_QUEUE_ROWS" in response.json()["detail"]
        assert response.headers["Retry-After"] == "1"
    for record, response in zip(records, responses):
        if response.status_code != 503:
            assert response.status_code == 200
            assert response.json()["predicted_price"] == one_record_price(estimators, record)


PROBE = """
import asyncio, sys
import numpy as np
from aimq_serving.api.sklearn_batcher import SklearnBatcher
assert "sklearn" not in sys.modules  # as in a worker that has not unpickled a model yet

class OpenMPThreads:
    # Reports the OpenMP thread count its caller gets.
    def predict(self, rows):
        from sklearn.ensemble import HistGradientBoostingRegressor  # noqa: F401
        from threadpoolctl import threadpool_info
        counts = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"]
        return np.full(len(rows), min(counts))

async def main():
    batcher = SklearnBatcher(10)
    try:
        print(int((await batcher.predict(OpenMPThreads(), np.zeros((1, 3))))[0]))
    finally:
        batcher.close()

asyncio.run(main())
"""


def test_sklearn_runs_on_one_openmp_thread_even_when_no_model_was_loaded_before() -> None:
    import os
    import subprocess
    import sys

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: OpenMP would use one thread anyway")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_the_per_request_pickle_mode_answers_through_the_same_thread(api_settings, estimators, sample_records) -> None:
    settings = api_settings.model_copy(update={"pickle_mode": "per_request"})
    records = distinct_records(sample_records, 12)

    async def work(client: httpx.AsyncClient, services: Any) -> list[httpx.Response]:
        return await asyncio.gather(*(client.post("/predict/pickle", json=r) for r in records))

    responses = run_with_app(settings, work)
    assert [r.status_code for r in responses] == [200] * len(records)
    assert [r.json()["predicted_price"] for r in responses] == [one_record_price(estimators, r) for r in records]
