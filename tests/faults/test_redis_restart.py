"""Redis killed and restarted while the API serves predictions and a run scores a file: the API
answers 503 while Redis is away (never a hang) and recovers by itself; the run's op retry policy
retries and the upload is scored once; the model store is intact (Redis persists, as in production)."""

from __future__ import annotations

import signal

import dagster as dg
import httpx
import pytest

from aimq_serving.api.payloads import SAMPLE_ROWS
from aimq_serving.api.ratelimit import max_unspent
from tests.helpers.faults import FaultPlatform, assert_scored_once, upload_and_catch_mid_file, wait_until

pytestmark = pytest.mark.slow

ROWS = 150_000


def _model_store(fp: FaultPlatform) -> dict[str, object]:
    """Every model-store key's type and content (DUMP bytes differ after a reload: encodings)."""
    read = {"string": "get", "hash": "hgetall", "zset": lambda c, k: c.zrange(k, 0, -1, withscores=True)}
    with fp.redis.client() as client:
        out: dict[str, object] = {}
        for key in client.scan_iter(match=f"{fp.settings.redis_prefix}:models:*"):
            kind = client.type(key).decode()
            reader = read[kind]
            out[key.decode()] = (kind, reader(client, key) if callable(reader) else getattr(client, reader)(key))
        return out


def _step_events(fp: FaultPlatform, run_id: str, kind: dg.DagsterEventType) -> list:
    return list(fp.instance.all_logs(run_id, of_type=kind))


def test_redis_restart_while_serving_and_scoring(fault_platform: FaultPlatform) -> None:
    fp = fault_platform
    api_pid = fp.platform.services["api"].proc.pid
    http = httpx.Client(base_url=fp.api_url, timeout=5)  # a hang fails the request, and the test
    assert http.post("/predict/onnx", json=SAMPLE_ROWS[0]).status_code == 200
    models = _model_store(fp)
    assert models

    upload_id, _, run_id = upload_and_catch_mid_file(fp, "redis.csv", ROWS)

    fp.redis.kill(signal.SIGKILL)
    try:
        # Models are in memory, and the rate limiter spends the tokens it leased before the outage;
        # then it cannot count requests any more and refuses them.
        answers = []
        # More requests than a worker can hold leased tokens for.
        for _ in range(max_unspent(fp.settings.rate_limit_requests) + 2):
            answers.append(http.post("/predict/onnx", json=SAMPLE_ROWS[0]))
            if answers[-1].status_code != 200:
                break
        for _ in range(3):
            answers.append(http.post("/predict/onnx", json=SAMPLE_ROWS[0]))
        refused = [a for a in answers if a.status_code != 200]
        assert len(refused) >= 4, [a.status_code for a in answers]
        assert all(a.status_code == 503 for a in answers[-4:]), [a.status_code for a in answers]
        for answer in refused:
            assert answer.status_code == 503, answer.text
            assert "unavailable (Redis)" in answer.json()["detail"] and answer.headers["retry-after"] == "1"
        assert http.get("/ready").status_code == 503
        assert http.get(f"/uploads/{upload_id}").status_code == 503
        # The run scores on (progress is informative), then cannot record its result: the attempt
        # fails and the op's retry policy schedules another.
        wait_until(
            lambda: bool(_step_events(fp, run_id, dg.DagsterEventType.STEP_UP_FOR_RETRY)),
            "the op to be up for retry",
            timeout_s=120,
            fp=fp,
        )
    finally:
        fp.redis.start()  # the same data directory: everything written before the kill is back

    # The same API process recovers by itself.
    wait_until(lambda: http.post("/predict/onnx", json=SAMPLE_ROWS[0]).status_code == 200, "predictions", 30, fp)
    wait_until(lambda: http.get("/ready").status_code == 200, "readiness", 30, fp)
    assert fp.platform.services["api"].proc.pid == api_pid and fp.platform.services["api"].proc.poll() is None

    done = assert_scored_once(fp, upload_id, ROWS)
    assert done["run_id"] == run_id  # the same run, retried in place by its op retry policy
    assert _model_store(fp) == models
    http.close()
