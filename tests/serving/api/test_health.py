"""Health, readiness, the no-op endpoint, Prometheus metrics, body-size limit and the OpenAPI docs."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from aimq_serving import schema
from aimq_serving.api.app import create_app
from aimq_serving.api.middleware import BodySizeLimitMiddleware
from aimq_serving.api.payloads import SAMPLE_ROWS
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings


def test_health_and_ping(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ping").json() == {"status": "ok"}
    assert client.post("/ping", json=SAMPLE_ROWS[0]).json() == {"status": "ok"}


def test_ready_when_redis_answers_and_every_group_is_loaded(client: TestClient, api_store: ModelStore) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True and body["redis"] == "ok" and body["problems"] == {}
    assert body["models"] == {g: api_store.current_version(g) for g in schema.MODEL_GROUPS}


def _sample(metrics_text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when absent)."""
    for line in metrics_text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name) : line.rindex("}")]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_by_route_and_status_and_predictions_by_version(
    client: TestClient, api_store: ModelStore
) -> None:
    before = client.get("/metrics").text
    client.post("/predict/onnx", json=SAMPLE_ROWS)
    client.post("/predict/onnx", json={**SAMPLE_ROWS[0], "kilometers": -1})
    client.get("/ping")
    after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text

    def delta(name: str, **labels: str) -> float:
        return _sample(text, name, **labels) - _sample(before, name, **labels)

    count = "aimq_http_request_duration_seconds_count"
    assert delta(count, endpoint="/predict/onnx", method="POST", status="200") == 1
    assert delta(count, endpoint="/predict/onnx", method="POST", status="422") == 1
    assert delta(count, endpoint="/ping", method="GET", status="200") == 1
    version = str(api_store.current_version("A"))
    assert delta("aimq_predictions_total", group="A", version=version, backend="onnxruntime") == 1
    # Loaded once at start-up, with the version served.
    assert _sample(text, "aimq_model_loads_total", group="A", version=version) == 1
    assert _sample(text, "aimq_model_loaded_version", group="A") == float(version)


def test_a_path_nobody_serves_is_one_label(client: TestClient) -> None:
    client.get("/no/such/path/123")
    client.get("/another/unknown")
    text = client.get("/metrics").text
    assert "/no/such" not in text
    assert _sample(text, "aimq_http_request_duration_seconds_count", endpoint="unmatched", status="404") >= 2


def test_body_over_the_limit_is_413_json(client: TestClient, api_settings: AimqSettings) -> None:
    too_big = b"x" * (api_settings.max_body_bytes + 1)
    declared = client.post("/predict/onnx", content=too_big)
    assert declared.status_code == 413
    assert str(api_settings.max_body_bytes) in declared.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(api_settings.max_body_bytes // 65536 + 2):
            yield b"x" * 65536

    streamed = client.post("/predict/onnx", content=chunks())
    assert streamed.status_code == 413
    assert streamed.json()["limit_bytes"] == api_settings.max_body_bytes
    text = client.get("/metrics").text
    assert _sample(text, "aimq_http_request_duration_seconds_count", endpoint="/predict/onnx", status="413") >= 2


@pytest.mark.parametrize(
    "path,limit", [("/uploads", 5000), ("/uploads/x", 5000), ("/predict", 100), ("/uploadsx", 100)]
)
def test_body_limit_per_path_prefix(path: str, limit: int) -> None:
    middleware = BodySizeLimitMiddleware(lambda *a: None, 100, {"/uploads": 5000})
    assert middleware.limit_for(path) == limit


def test_openapi_documents_the_sample_rows_and_error_bodies(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec: dict[str, Any] = client.get("/openapi.json").json()
    operation = spec["paths"]["/predict/onnx"]["post"]
    content = operation["requestBody"]["content"]["application/json"]
    assert content["examples"]["record"]["value"] == SAMPLE_ROWS[0]
    assert content["examples"]["batch"]["value"] == SAMPLE_ROWS
    record_schema = content["schema"]["oneOf"][0]
    assert record_schema["properties"]["fuel_type"]["enum"] == list(schema.CATEGORICAL_BY_NAME["fuel_type"].values)
    assert {"404", "422", "429", "503"} <= set(operation["responses"])
    for path in ("/predict/pickle", "/predict", "/models", "/ready", "/ping", "/metrics", "/health"):
        assert path in spec["paths"]


def test_every_documented_error_answer_is_the_one_error_body() -> None:
    # An app built for its schema only (nothing connects before the lifespan), with API keys on so
    # the 401 answers are documented too.
    app = create_app(AimqSettings(api_keys=SecretStr("docs:" + "0123456789abcdef" * 2)))
    spec: dict[str, Any] = app.openapi()
    error_schemas: dict[tuple[str, str, str], Any] = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400 and (path, status) != ("/ready", "503"):
                    error_schemas[(method, path, status)] = response["content"]["application/json"]["schema"]
    documented = set(error_schemas)
    assert {("post", "/upload", "415"), ("post", "/predict/onnx", "413"), ("get", "/models", "401")} <= documented
    other = {where for where, body in error_schemas.items() if body != {"$ref": "#/components/schemas/ErrorBody"}}
    assert other == set()
    assert spec["paths"]["/ready"]["get"]["responses"]["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Readiness"
    }
