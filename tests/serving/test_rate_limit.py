"""The rate limit: per client key, shared through Redis by every worker, 429 with Retry-After."""

from __future__ import annotations

import time
import uuid

from aimq_serving.api.payloads import SAMPLE_ROWS
from aimq_serving.api.ratelimit import max_unspent
from aimq_serving.settings import AimqSettings


def _limited(settings: AimqSettings, requests: int, window_s: float = 60.0, **extra) -> AimqSettings:
    return settings.model_copy(update={
        "redis_prefix": f"{settings.redis_prefix}-rl-{uuid.uuid4().hex[:6]}",
        "rate_limit_requests": requests, "rate_limit_window_s": window_s, **extra,
    })


def test_past_the_limit_429_with_retry_after(make_client, api_settings: AimqSettings) -> None:
    client = make_client(_limited(api_settings, 5), owns_prefix=True)
    assert [client.get("/ping").status_code for _ in range(5)] == [200] * 5
    refused = client.post("/predict/onnx", json=SAMPLE_ROWS[0])
    assert refused.status_code == 429
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 60
    body = refused.json()
    assert body["retry_after_s"] == retry_after and "5 requests per 60 s" in body["detail"]
    # Probes and scrapes are not limited, and the refusals are counted on their route.
    assert client.get("/health").status_code == 200
    metrics = client.get("/metrics").text
    assert 'aimq_http_request_duration_seconds_count{endpoint="/predict/onnx",method="POST",status="429"} 1.0' in metrics


def test_each_client_key_has_its_own_budget(make_client, api_settings: AimqSettings) -> None:
    client = make_client(_limited(api_settings, 2, rate_limit_key_header="X-API-Key"), owns_prefix=True)
    first = {"X-API-Key": "first"}
    assert [client.get("/ping", headers=first).status_code for _ in range(3)] == [200, 200, 429]
    assert client.get("/ping", headers={"X-API-Key": "second"}).status_code == 200
    # Without the header the client address is the key.
    assert client.get("/ping").status_code == 200


def test_the_limit_is_shared_by_separate_processes(make_client, api_settings: AimqSettings) -> None:
    """Two apps with nothing in common but Redis stand for two workers (or two servers)."""
    settings = _limited(api_settings, 1000)
    one, two = make_client(settings, owns_prefix=True), make_client(settings)
    accepted = sum((one if i % 2 else two).get("/ping").status_code == 200 for i in range(1100))
    # Never more than the limit; the other app holds at most max_unspent tokens it did not use.
    assert 1000 - max_unspent(1000) <= accepted <= 1000


def test_the_window_ends(make_client, api_settings: AimqSettings) -> None:
    client = make_client(_limited(api_settings, 2, window_s=1.0), owns_prefix=True)
    assert [client.get("/ping").status_code for _ in range(3)] == [200, 200, 429]
    deadline = time.monotonic() + 10
    while client.get("/ping").status_code == 429:
        assert time.monotonic() < deadline, "the window never ended"
        time.sleep(0.2)
