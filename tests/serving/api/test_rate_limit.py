"""The rate limit: per client key, shared through Redis by every worker, 429 with Retry-After."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid

import pytest
import redis

from aimq_serving.api.payloads import SAMPLE_ROWS
from aimq_serving.api.ratelimit import RateLimiter, lease_size, max_unspent
from aimq_serving.settings import AimqSettings
from tests.helpers.paths import REPO
from tests.helpers.redis_keys import clear_prefix


def _limited(settings: AimqSettings, requests: int, window_s: float = 60.0, **extra) -> AimqSettings:
    return settings.model_copy(
        update={
            "redis_prefix": f"{settings.redis_prefix}-rl-{uuid.uuid4().hex[:6]}",
            "rate_limit_requests": requests,
            "rate_limit_window_s": window_s,
            **extra,
        }
    )


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
    assert (
        'aimq_http_request_duration_seconds_count{endpoint="/predict/onnx",method="POST",status="429"} 1.0' in metrics
    )


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


def test_requests_spending_a_finished_lease_do_not_stall_the_worker(
    api_settings: AimqSettings, redis_client: redis.Redis
) -> None:
    """Regression (found by the load test): requests scheduled in the loop iteration in which a lease
    finishes, before its done-callback runs, spend what it granted; the next one must wait for a new
    lease, not spin on the finished one with the event loop blocked for good. Run in a process of its
    own: the bug never returns."""
    prefix = f"{api_settings.redis_prefix}-race-{uuid.uuid4().hex[:6]}"
    code = (
        f"from tests.serving.api.test_rate_limit import lease_race; lease_race({api_settings.redis_url!r}, {prefix!r})"
    )
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("the limiter's event loop stopped answering: check() spun on a finished lease")
    finally:
        clear_prefix(redis_client, prefix)
    assert done.returncode == 0, done.stderr


def lease_race(redis_url: str, prefix: str) -> None:
    asyncio.run(_lease_race(redis_url, prefix))


async def _lease_race(redis_url: str, prefix: str) -> None:
    limit = 200
    grant = lease_size(limit)
    limiter = RateLimiter(redis_url, prefix, limit=limit, window_s=60, timeout_s=5)
    await limiter.start()
    # Redis answers the first lease at the moment more requests arrive: hold the lease's answer until
    # they wait on the same event, so all wake in one loop iteration, the lease first.
    arrived = asyncio.get_running_loop().create_future()
    answered = asyncio.Event()
    lease_script = limiter._script

    async def lease_when_they_arrive(*args, **kwargs):  # type: ignore[no-untyped-def]
        result = await lease_script(*args, **kwargs)  # type: ignore[misc, operator]
        answered.set()
        await arrived
        return result

    limiter._script = lease_when_they_arrive

    async def request_arriving_then() -> float | None:
        await arrived
        return await limiter.check("key:race")

    first = asyncio.ensure_future(limiter.check("key:race"))
    await answered.wait()
    others = [asyncio.ensure_future(request_arriving_then()) for _ in range(grant + 3)]
    await asyncio.sleep(0)
    arrived.set_result(None)
    results = await asyncio.wait_for(asyncio.gather(first, *others), timeout=30)
    await limiter.aclose()
    # Far under the limit: every request goes ahead, the ones past the first grant on a new lease.
    assert results == [None] * (grant + 4), results
