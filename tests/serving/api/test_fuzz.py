"""Property-based fuzz of every operation in the app's OpenAPI schema (schemathesis), in process
against the real app: real Redis, the pipeline's trained models, a RabbitMQ exchange of its own,
API keys on as in the deployments. Data that fits the schema and data that does not; every answer
must be no 5xx, a documented status, the documented content type, and a body that fits its schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from aimq_serving import schema as schema_columns
from aimq_serving.api.app import create_app
from aimq_serving.api.payloads import SAMPLE_ROWS
from aimq_serving.settings import AimqSettings
from tests.helpers.redis_keys import clear_prefix, copy_models
from tests.helpers.topology import delete_topology, unique_topology_settings

FUZZ_KEY = "fuzz-" + "0123456789abcdef" * 2
# Replaces whatever credentials schemathesis generates from the security schemes, so the cases reach
# the handlers (test_auth.py covers the refusals).
AUTH = {"Authorization": f"Bearer {FUZZ_KEY}"}
MAX_EXAMPLES = 40
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_settings(
    api_settings: AimqSettings,
    run_id: str,
    tmp_path_factory: pytest.TempPathFactory,
    redis_client: Any,
    upload_records: None,
) -> Iterator[AimqSettings]:
    own = unique_topology_settings(api_settings, run_id, tmp_path_factory.mktemp("fuzz-uploads"))
    own = own.model_copy(
        update={
            "redis_prefix": f"{api_settings.redis_prefix}-fuzz",
            "api_keys": SecretStr(f"fuzz:{FUZZ_KEY}"),
            # Generous: the fuzz must meet the handlers, not the rate limit.
            "rate_limit_requests": 1_000_000,
            # Small files keep generated uploads cheap; the limit itself is then part of what is fuzzed.
            "max_upload_bytes": 64 * 1024,
        }
    )
    copy_models(redis_client, api_settings.redis_prefix, own.redis_prefix)
    yield own
    clear_prefix(redis_client, own.redis_prefix)
    delete_topology(own)


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_settings: AimqSettings) -> Iterator[Any]:
    app = create_app(fuzz_settings)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    asgi.shutdown_lifespans()  # the app's lifespan runs until here: its Redis and broker clients close


@pytest.fixture(scope="module")
def known_upload(fuzz_schema: Any) -> str:
    """An upload that exists (queued: no scoring run here), so the upload paths meet more than 404s."""
    rows = "\n".join(",".join(str(row[c]) for c in schema_columns.INPUT_COLUMNS) for row in SAMPLE_ROWS)
    body = (",".join(schema_columns.INPUT_COLUMNS) + "\n" + rows + "\n").encode()
    with asgi.get_client(fuzz_schema.app) as http:
        response = http.post("/upload", files={"file": ("sample.csv", body, "text/csv")}, headers=AUTH)
    assert response.status_code == 202, response.text
    return response.json()["upload_id"]


def _cases() -> list[tuple[str, str, GenerationMode]]:
    """(method, path, mode) of every documented operation, from an app built for its schema only
    (nothing connects before the lifespan starts); collected here, so each is a test of its own.
    Data that does not fit the schema only exists for an operation that takes some."""
    app = create_app(AimqSettings(api_keys=SecretStr(f"fuzz:{FUZZ_KEY}")))
    cases = []
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            takes_input = bool(operation.get("parameters") or operation.get("requestBody"))
            for mode in GenerationMode:
                if mode.is_positive or takes_input:
                    cases.append((method.upper(), path, mode))
    return cases


CASES = _cases()


# schemathesis' own pytest integration (schema.parametrize) relies on pytest internals that pytest 9
# changed; drawing cases from each operation's strategy with plain hypothesis needs none of them.
@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {g}" for m, p, g in CASES])
def test_every_operation_answers_as_documented(
    fuzz_schema: Any, known_upload: str, method: str, path: str, mode: GenerationMode
) -> None:
    operation = fuzz_schema[path][method]
    strategy = operation.as_strategy(generation_mode=mode)
    if mode.is_positive and "{upload_id}" in path:
        strategy = strategy | operation.as_strategy(generation_mode=mode, path_parameters={"upload_id": known_upload})

    @hypothesis.given(case=strategy)
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.generate, hypothesis.Phase.shrink],
    )
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=AUTH, checks=CHECKS)

    fuzz()


def test_the_fuzz_covers_the_api() -> None:
    assert {
        ("POST", "/predict/onnx"),
        ("POST", "/predict/pickle"),
        ("POST", "/upload"),
        ("GET", "/uploads/{upload_id}"),
        ("GET", "/models"),
        ("GET", "/ready"),
        ("GET", "/uploads/{upload_id}/result"),
    } <= {(m, p) for m, p, _ in CASES}
