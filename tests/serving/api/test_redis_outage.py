"""Redis going away and coming back, through a proxy in front of the real Redis: 503 within the
client's patience (never a hang or a 500), and recovery without restarting the app."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlparse

import httpx
import pytest
from fastapi.testclient import TestClient

from aimq_serving.api.payloads import SAMPLE_ROWS
from aimq_serving.settings import AimqSettings
from tests.helpers.api_server import server_env, uvicorn_server
from tests.helpers.session import REDIS_URL
from tests.helpers.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    target = urlparse(REDIS_URL)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379).start()
    yield proxy
    proxy.stop()


# The rate-limit counters share the models' prefix: a key of its own per test keeps this test's
# budget apart from the other tests' requests.
KEY_HEADER = "X-Test-Client"


def _through(proxy: TcpProxy, settings: AimqSettings, **extra) -> AimqSettings:
    # A limit of 100 leases one token at a time, so every request needs Redis.
    return settings.model_copy(
        update={
            "redis_url": proxy.url,
            "redis_timeout_s": 0.5,
            "rate_limit_requests": 100,
            "rate_limit_key_header": KEY_HEADER,
            **extra,
        }
    )


def _own_key() -> dict[str, str]:
    return {KEY_HEADER: uuid.uuid4().hex}


def _eventually(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "did not recover"
        time.sleep(0.2)


def _predict(client: TestClient) -> httpx.Response:
    return client.post("/predict/onnx", json=SAMPLE_ROWS[0])


def test_redis_down_is_503_then_recovers(make_client, api_settings: AimqSettings, proxy: TcpProxy) -> None:
    client = make_client(_through(proxy, api_settings))
    client.headers.update(_own_key())
    assert _predict(client).status_code == 200

    proxy.set_mode("refuse")
    for _ in range(3):
        refused = _predict(client)
        assert refused.status_code == 503
        assert "unavailable (Redis)" in refused.json()["detail"]
        assert refused.headers["retry-after"] == "1"
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["redis"] == "unavailable"
    models = client.get("/models")
    assert models.status_code == 503 and "unavailable" in models.json()["detail"]

    proxy.set_mode("forward")
    _eventually(lambda: _predict(client).status_code == 200)
    _eventually(lambda: client.get("/ready").status_code == 200)


def test_redis_that_never_answers_is_503_before_the_client_gives_up(
    api_settings: AimqSettings, proxy: TcpProxy
) -> None:
    """A real server and a client with a 5 s timeout: a hang would fail the test."""
    with (
        uvicorn_server(server_env(_through(proxy, api_settings)), workers=1) as url,
        httpx.Client(base_url=url, timeout=5, headers=_own_key()) as client,
    ):
        assert client.post("/predict/onnx", json=SAMPLE_ROWS[0]).status_code == 200
        proxy.set_mode("blackhole")
        for _ in range(3):
            refused = client.post("/predict/onnx", json=SAMPLE_ROWS[0])
            assert refused.status_code == 503 and "unavailable (Redis)" in refused.json()["detail"]
        assert client.get("/ready").status_code == 503
        assert client.get("/models").status_code == 503
        proxy.set_mode("forward")
        _eventually(lambda: client.post("/predict/onnx", json=SAMPLE_ROWS[0]).status_code == 200)


def test_started_without_redis_loads_the_models_when_it_comes_back(
    make_client, api_settings: AimqSettings, proxy: TcpProxy
) -> None:
    proxy.set_mode("refuse")
    client = make_client(_through(proxy, api_settings, rate_limit_enabled=False))
    refused = _predict(client)
    assert refused.status_code == 503 and "model store unavailable" in refused.json()["detail"]
    assert client.get("/ready").status_code == 503

    proxy.set_mode("forward")
    _eventually(lambda: _predict(client).status_code == 200)

    # Loaded models keep serving through the next outage (no rate limit needs Redis here).
    proxy.set_mode("refuse")
    assert _predict(client).status_code == 200
    assert client.get("/ready").status_code == 503
