"""/predict/onnx, /predict/pickle and /predict against the pipeline's models in the real Redis."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from aimq_serving import schema
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings

# ONNX Runtime computes in float32, sklearn in float64.
RTOL = 1e-5


def direct_sklearn(store: ModelStore, frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, int]]:
    """Prices from the stored sklearn models, with no API code in between."""
    prices = np.empty(len(frame))
    versions = {}
    for group, rows in frame.groupby(schema.GROUP_FIELD):
        stored = store.get(group)
        matrix, valid, errors = stored.spec.encode_frame(rows)
        assert valid.all() and not errors
        prices[rows.index.to_numpy()] = stored.load_sklearn().predict(matrix)
        versions[group] = stored.info.version
    return prices, versions


def test_onnx_pickle_and_sklearn_agree_on_every_sample_row(
    client: TestClient, api_store: ModelStore, sample_frame: pd.DataFrame, sample_records: list[dict[str, Any]]
) -> None:
    expected, versions = direct_sklearn(api_store, sample_frame)
    for path in ("/predict/onnx", "/predict/pickle", "/predict"):
        response = client.post(path, json=sample_records)
        assert response.status_code == 200, response.text
        body = response.json()
        assert [p["model_group"] for p in body] == sample_frame[schema.GROUP_FIELD].tolist()
        assert [p["model_version"] for p in body] == [versions[g] for g in sample_frame[schema.GROUP_FIELD]]
        np.testing.assert_allclose([p["predicted_price"] for p in body], expected, rtol=RTOL, err_msg=path)


def test_single_records_match_the_batch(client: TestClient, sample_records: list[dict[str, Any]]) -> None:
    batch = client.post("/predict/onnx", json=sample_records).json()
    for record, from_batch in zip(sample_records, batch):
        for path in ("/predict/onnx", "/predict/pickle"):
            response = client.post(path, json=record)
            assert response.status_code == 200, response.text
            single = response.json()
            assert single["model_group"] == record["model_group"]
            assert single["model_version"] == from_batch["model_version"]
            assert single["predicted_price"] == pytest.approx(from_batch["predicted_price"], rel=RTOL)


def test_a_batch_over_the_limit_is_refused(
    client: TestClient, api_settings: AimqSettings, sample_records: list[dict[str, Any]]
) -> None:
    records = (sample_records * (api_settings.max_batch_size // len(sample_records) + 1))[
        : api_settings.max_batch_size + 1
    ]
    response = client.post("/predict/onnx", json=records)
    assert response.status_code == 422
    assert str(api_settings.max_batch_size) in response.json()["errors"][0]["message"]


DROP = object()


def _bad(record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``record`` with fields changed, added, or dropped (value DROP)."""
    out = {**record, **changes}
    return {k: v for k, v in out.items() if v is not DROP}


BAD_RECORDS = [
    # (case, change to a good record, field named in the error, allowed values or None)
    ("unknown category", {"fuel_type": "Steam"}, "fuel_type", list(schema.CATEGORICAL_BY_NAME["fuel_type"].values)),
    ("missing field", {"color": DROP}, "color", None),
    ("extra field", {"turbo": True}, "turbo", None),
    ("text for a number", {"kilometers": "lots"}, "kilometers", None),
    ("number beyond the range as text", {"kilometers": "1e20"}, "kilometers", None),
    ("boolean for a number", {"kilometers": True}, "kilometers", None),
    ("fraction for a whole number", {"kilometers": 1000.5}, "kilometers", None),
    ("number for a category", {"fuel_type": 3}, "fuel_type", list(schema.CATEGORICAL_BY_NAME["fuel_type"].values)),
    ("negative kilometers", {"kilometers": -1}, "kilometers", None),
    ("absurd age", {"age_in_months": 601}, "age_in_months", None),
]


@pytest.mark.parametrize("case,changes,field,allowed", BAD_RECORDS, ids=[c[0] for c in BAD_RECORDS])
@pytest.mark.parametrize("path", ["/predict/onnx", "/predict/pickle"])
def test_bad_record_gets_422_naming_the_field(
    client: TestClient,
    sample_records: list[dict[str, Any]],
    path: str,
    case: str,
    changes: dict[str, Any],
    field: str,
    allowed: list | None,
) -> None:
    response = client.post(path, json=_bad(sample_records[0], **changes))
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert len(errors) == 1
    assert errors[0]["field"] == field
    assert "row" not in errors[0]
    assert errors[0].get("allowed") == allowed


@pytest.mark.parametrize(
    "changes",
    [
        {"kilometers": 1000.0},
        {"kilometers": "1000"},
        {"kilometers": " 1000 "},
        {"model": "180"},
        {"model": 180.0},
        {"fuel_type": " Diesel "},
    ],
    ids=repr,
)
def test_a_value_that_means_a_valid_one_is_priced_as_it(
    client: TestClient, sample_records: list[dict[str, Any]], changes: dict[str, Any]
) -> None:
    """As in a batch file, where a number has no type (CSV) or is always a double (xlsx)."""
    record = {**sample_records[0], "kilometers": 1000, "model": 180, "fuel_type": "Diesel"}
    expected = client.post("/predict/onnx", json=record)
    response = client.post("/predict/onnx", json={**record, **changes})
    assert response.status_code == 200, response.text
    assert response.json() == expected.json()


def test_negative_zero_is_zero(client: TestClient, sample_records: list[dict[str, Any]]) -> None:
    """-0.0 km is 0 km, online as in a batch file (it was refused online and scored in batch)."""
    zero = client.post("/predict/onnx", content=json.dumps({**sample_records[0], "kilometers": 0}))
    negative = client.post("/predict/onnx", content=json.dumps({**sample_records[0], "kilometers": -0.0}))
    assert negative.status_code == 200, negative.text
    assert negative.json() == zero.json()


def test_refusals_quote_the_value_as_sent(client: TestClient, sample_records: list[dict[str, Any]]) -> None:
    cases = {
        "model": (1e20, "unknown value 1e+20"),
        "kilometers": (" lots ", "' lots ' is not a number"),
        "age_in_months": (0.5, "0.5 must be a whole number in [0, 600]"),
        "fuel_type": (" Steam ", "unknown value ' Steam '"),
    }
    for field, (value, message) in cases.items():
        response = client.post("/predict/onnx", json={**sample_records[0], field: value})
        assert response.status_code == 422, response.text
        assert [(e["field"], e["message"]) for e in response.json()["errors"]] == [(field, message)]


def test_bad_rows_of_a_batch_are_all_reported_with_their_position(
    client: TestClient, sample_records: list[dict[str, Any]]
) -> None:
    records = [
        sample_records[0],
        _bad(sample_records[1], kilometers=-5),
        sample_records[2],
        _bad(sample_records[3], line="Gold"),
    ]
    response = client.post("/predict/onnx", json=records)
    assert response.status_code == 422
    assert [(e["row"], e["field"]) for e in response.json()["errors"]] == [(1, "kilometers"), (3, "line")]


def test_category_the_groups_model_never_saw_is_422_with_that_models_values(
    client: TestClient, api_store: ModelStore, sample_records: list[dict[str, Any]]
) -> None:
    known = set(api_store.get("A").spec.categorical["model"])
    unseen = next(v for v in schema.CATEGORICAL_BY_NAME["model"].values if v not in known)
    response = client.post("/predict/pickle", json=[sample_records[1], _bad(sample_records[0], model=unseen)])
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert (error["row"], error["field"]) == (1, "model")
    assert sorted(error["allowed"]) == sorted(known)


@pytest.mark.parametrize(
    "body,message",
    [(b"{not json", "Invalid JSON"), (b"", "Invalid JSON"), (b'"a string"', "object"), (b"[]", "at least 1")],
    ids=["broken", "empty", "not an object", "empty batch"],
)
def test_body_that_is_not_a_record_or_batch_gets_422(client: TestClient, body: bytes, message: str) -> None:
    response = client.post("/predict/onnx", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["field"] is None and message in error["message"]


def test_unknown_model_group_is_404_with_the_known_groups(
    client: TestClient, sample_records: list[dict[str, Any]]
) -> None:
    response = client.post("/predict/onnx", json=_bad(sample_records[0], model_group="Z"))
    assert response.status_code == 404
    body = response.json()
    assert "'Z'" in body["detail"]
    assert body["errors"] == [
        {"field": "model_group", "message": "unknown model group", "allowed": list(schema.MODEL_GROUPS)}
    ]


def test_no_model_yet_is_503_and_not_ready(
    make_client, api_settings: AimqSettings, sample_records: list[dict[str, Any]]
) -> None:
    empty = api_settings.model_copy(update={"redis_prefix": api_settings.redis_prefix + "-empty"})
    client = make_client(empty, owns_prefix=True)
    response = client.post("/predict/onnx", json=sample_records[0])
    assert response.status_code == 503
    assert "no model yet" in response.json()["detail"]
    assert response.headers["retry-after"] == "1"
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert set(ready.json()["problems"]) == set(schema.MODEL_GROUPS)


@pytest.mark.parametrize("artifact", ["pickle", "onnx"])
def test_tampered_model_is_503_never_loaded(
    make_client,
    api_settings: AimqSettings,
    redis_client,
    sample_records: list[dict[str, Any]],
    artifact: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.helpers.redis_keys import copy_models

    tampered = api_settings.model_copy(update={"redis_prefix": f"{api_settings.redis_prefix}-tampered-{artifact}"})
    copy_models(redis_client, api_settings.redis_prefix, tampered.redis_prefix)
    store = ModelStore.from_settings(tampered)
    version = store.current_version("A")
    key = f"{tampered.redis_prefix}:models:A:v:{version}"
    redis_client.hset(key, artifact, redis_client.hget(key, artifact)[:-1] + b"!")  # one byte changed
    with caplog.at_level("ERROR", logger="aimq_serving.model_store"):
        client = make_client(tampered, owns_prefix=True)
        response = client.post("/predict/onnx", json=sample_records[0])
        assert client.post("/predict/pickle", json=sample_records[0]).status_code == 503
    assert response.status_code == 503
    assert "signature does not match" in response.json()["detail"]
    # Logged once (at start-up, not per request), naming the group, the version and the artifact.
    [record] = [r for r in caplog.records if r.name == "aimq_serving.model_store"]
    assert record.getMessage() == (
        f"refusing model group=A version={version}: signature check failed: changed after signing: {artifact}"
    )
    # The other groups are unaffected.
    assert client.post("/predict/onnx", json=sample_records[1]).status_code == 200


def test_redisai_backend_without_the_module_is_503_saying_so(
    make_client, api_settings: AimqSettings, sample_records: list[dict[str, Any]], redis_client: redis.Redis
) -> None:
    # Versions stored without RedisAI (a Redis without the module; the suite's Redis may have it).
    from tests.helpers.redis_keys import copy_models

    plain = api_settings.model_copy(
        update={"redis_prefix": f"{api_settings.redis_prefix}-noai", "predict_backend": "redisai"}
    )
    copied = copy_models(redis_client, api_settings.redis_prefix, plain.redis_prefix)
    for key in copied:
        if ":ai:" in key:
            redis_client.delete(key)
        elif ":v:" in key:
            redis_client.hset(key, "redisai", 0)
    client = make_client(plain, owns_prefix=True)
    response = client.post("/predict/onnx", json=sample_records[0])
    assert response.status_code == 503
    assert "not stored in RedisAI" in response.json()["detail"]
    # The pickle route does not depend on the ONNX backend.
    assert client.post("/predict/pickle", json=sample_records[0]).status_code == 200


def test_a_client_gone_before_its_body_arrived_is_no_server_error(client: TestClient) -> None:
    """A load generator stopping mid-request, or a timed-out client: answered 499 into the void,
    counted in the metrics, never an exception for the server's log."""
    sent: list[dict[str, Any]] = []

    async def call() -> None:
        messages = iter(
            [{"type": "http.request", "body": b'{"model_group": "A", ', "more_body": True}, {"type": "http.disconnect"}]
        )

        async def receive() -> dict[str, Any]:
            return next(messages)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/predict/onnx",
            "raw_path": b"/predict/onnx",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"400")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        await client.app(scope, receive, send)

    client.portal.call(call)  # type: ignore[union-attr]
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [499]
    metrics = client.get("/metrics").text
    assert (
        'aimq_http_request_duration_seconds_count{endpoint="/predict/onnx",method="POST",status="499"} 1.0' in metrics
    )
