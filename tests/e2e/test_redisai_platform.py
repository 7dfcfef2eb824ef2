"""The platform on the RedisAI that compose and k8s deploy: train through Dagster into RedisAI, serve
/predict/onnx through AI.DAGEXECUTE, score the sample file in batch, survive a RedisAI restart.

Runs on a private Redis 6.2.5 + RedisAI 1.2.7 (ONNX Runtime 1.11) server from the folder that
`./dev test` unpacks from AIMQ_REDISAI_DIST (AIMQ_TEST_REDISAI_HOME), so a test may kill it. No RedisAI
server comes from a package registry: without that folder these tests skip."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import numpy as np
import pytest

from aimq_cli.errors import CliError
from aimq_cli.train import cmd_train
from aimq_pipelines.definitions import defs
from aimq_pipelines.models import onnx_export
from aimq_pipelines.models.resources import ModelStoreResource, TrainingDataSource
from aimq_pipelines.uploads.input_table import InputTable
from aimq_pipelines.uploads.scoring import PinnedModels, score_file
from aimq_serving import schema
from aimq_serving.loaded_models import ModelCache
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings
from tests.helpers.api_server import distinct_records, server_env, uvicorn_server
from tests.helpers.paths import SAMPLES
from tests.helpers.servers import RedisAIServer
from tests.helpers.session import TEST_ROWS_PER_GROUP

REDISAI_HOME = os.environ.get("AIMQ_TEST_REDISAI_HOME")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not REDISAI_HOME,
        reason="no RedisAI build given to start privately: no package registry has one; set AIMQ_REDISAI_DIST "
        "to a folder of Redis 6.2.5 + RedisAI 1.2.7 tarballs (./dev test unpacks it)",
    ),
]


@pytest.fixture(scope="module")
def ai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisAIServer]:
    server = RedisAIServer(tmp_path_factory.mktemp("redisai"), Path(REDISAI_HOME))
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def ai_settings(settings: AimqSettings, ai_server: RedisAIServer) -> AimqSettings:
    return settings.model_copy(
        update={
            "redis_url": ai_server.url,
            "redis_prefix": f"aimqtest-ai-{uuid.uuid4().hex[:8]}",
            "predict_backend": "redisai",
            "rate_limit_requests": 1_000_000,
        }
    )


def train(ai_settings: AimqSettings, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """The train_models job, as the daemon or the UI runs it, into the RedisAI server's store."""
    return defs.resolve_job_def("train_models").execute_in_process(
        instance=instance,
        raise_on_error=False,
        resources={
            "model_store": ModelStoreResource(redis_url=ai_settings.redis_url, prefix=ai_settings.redis_prefix),
            "training_source": TrainingDataSource(rows_per_group=TEST_ROWS_PER_GROUP),
        },
    )


def sample_records() -> list[dict[str, Any]]:
    import pandas as pd

    return pd.read_excel(SAMPLES / "100_rows.xlsx", keep_default_na=False).to_dict("records")


def in_process_prices(store: ModelStore, records: list[dict[str, Any]]) -> list[float]:
    cache = ModelCache(store)
    prices = []
    for record in records:
        model = cache.get(record["model_group"])
        prices.append(float(model.predict_onnx(model.spec.encode_records([record]))[0]))
    return prices


def post_all(url: str, records: list[dict[str, Any]]) -> list[httpx.Response]:
    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=200), timeout=60) as client:
            return await asyncio.gather(*(client.post("/predict/onnx", json=r) for r in records))

    return asyncio.run(fire())


def wait_ready(url: str, want: bool, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body = httpx.get(f"{url}/ready", timeout=10).json()
        if body["ready"] is want or time.monotonic() > deadline:
            return body
        time.sleep(0.3)


def recovered_answers(url: str, records: list[dict[str, Any]], timeout_s: float = 60.0) -> list[httpx.Response]:
    """All answers 200, once each worker has noticed that Redis came back: a request that finds a
    pooled connection of the killed server, or the rate limiter backing off, gets a 503 that says
    so (the API's contract for a Redis restart, tests/faults/test_redis_restart.py), never a price."""
    deadline = time.monotonic() + timeout_s
    while True:
        answers = post_all(url, records)
        codes = {r.status_code for r in answers}
        if codes == {200} or time.monotonic() > deadline:
            assert codes == {200}, {r.status_code: r.text for r in answers if r.status_code != 200}
            return answers
        assert codes <= {200, 503}, {r.status_code: r.text for r in answers}
        assert all("predicted_price" not in r.text for r in answers if r.status_code == 503)
        time.sleep(1.0)


def test_trained_served_and_scored_through_redisai_and_recovers_from_a_restart(
    ai_settings: AimqSettings, ai_server: RedisAIServer, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    assert train(ai_settings, instance).success
    store = ModelStore.from_settings(ai_settings)
    for group in schema.MODEL_GROUPS:
        info = store.info(group, store.current_version(group))
        assert info.redisai and store.redisai_model_exists(group, info.version), group

    records = sample_records()
    expected = in_process_prices(store, records)
    with uvicorn_server(server_env(ai_settings), workers=2) as url:
        # Each sample row through RedisAI equals in-process ONNX Runtime, one by one and as a batch.
        answers = post_all(url, records)
        assert [r.status_code for r in answers] == [200] * len(records)
        np.testing.assert_allclose([r.json()["predicted_price"] for r in answers], expected, rtol=1e-5)
        batch = httpx.post(f"{url}/predict/onnx", json=records, timeout=30)
        np.testing.assert_allclose([p["predicted_price"] for p in batch.json()], expected, rtol=1e-5)
        assert 'backend="redisai"' in httpx.get(f"{url}/metrics").text

        # Batch scoring of the same file gives the same prices.
        result_path = tmp_path / "result.xlsx"
        result = score_file(
            InputTable.open(SAMPLES / "100_rows.xlsx", "xlsx"),
            result_path=result_path,
            rejected_path=tmp_path / "rejected.csv",
            models=PinnedModels.from_cache(ModelCache(store)),
            max_rows=1000,
            work_dir=tmp_path,
        )
        assert (result.rows_total, result.rows_rejected) == (100, 0)
        import fastexcel

        scored = fastexcel.read_excel(str(result_path)).load_sheet(0).to_pandas()
        np.testing.assert_allclose(scored["predicted_price"], [r.json()["predicted_price"] for r in answers], rtol=1e-5)

        # 200 concurrent distinct requests each get their own answer.
        distinct = distinct_records(records, 200)
        responses = post_all(url, distinct)
        assert [r.status_code for r in responses] == [200] * 200
        np.testing.assert_allclose(
            [r.json()["predicted_price"] for r in responses], in_process_prices(store, distinct), rtol=1e-5
        )

        # RedisAI restarted without persistence: every key is gone (AI models and the store's records).
        ai_server.restart()
        body = wait_ready(url, want=False)
        assert not body["ready"] and set(body["problems"]) >= set(schema.MODEL_GROUPS), body
        # Meanwhile no wrong answer: a 503 saying why, never a price.
        lost = httpx.post(f"{url}/predict/onnx", json=records[0], timeout=30)
        assert lost.status_code == 503 and "predicted_price" not in lost.text, lost.text

        # Recovery: served_model stores the models again (a re-run of train_models, as the schedule or
        # a person would); the API loads them by itself, although the version numbers start over.
        assert train(ai_settings, instance).success
        body = wait_ready(url, want=True)
        assert body["ready"], body
        expected = in_process_prices(store, records)
        answers = recovered_answers(url, records)
        np.testing.assert_allclose([r.json()["predicted_price"] for r in answers], expected, rtol=1e-5)


def test_a_model_redisai_refuses_fails_served_model_at_once_with_its_reason(
    ai_settings: AimqSettings, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ModelStore.from_settings(ai_settings)
    if store.current_version("A", missing_ok=True) == 0:
        assert train(ai_settings, instance).success
    before = store.current_versions()
    # What AIMQ exported before it knew the deployed RedisAI's limits: ai.onnx opset 17. The patch lifts
    # served_model's own limit check with the export's target, so that RedisAI's refusal is what is tested
    # (the check itself: tests/pipelines/models/test_onnx_runtime_1_11.py).
    monkeypatch.setattr(onnx_export, "MAX_OPSET", 17)
    result = train(ai_settings, instance)
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert {e.step_key for e in failures} == {f"{g}__served_model" for g in schema.MODEL_GROUPS}
    for event in failures:
        assert "Current official support for domain ai.onnx is till opset 16" in event.step_failure_data.error.message
    # Not transient: no retry was even scheduled.
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert store.current_versions() == before  # the promoted versions stay served

    # `aimq train` says why in its one line.
    monkeypatch.setenv("AIMQ_REDIS_URL", ai_settings.redis_url)
    monkeypatch.setenv("AIMQ_REDIS_PREFIX", ai_settings.redis_prefix)
    with pytest.raises(CliError, match=r"training failed in A__served_model: .*till opset 16"):
        cmd_train(AimqSettings(), ["A"])
