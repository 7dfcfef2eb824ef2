"""The model store against the real Redis: versions, promotion, rollback, pruning, signatures."""

from __future__ import annotations

import json
import pickle
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis
from sklearn.dummy import DummyRegressor

from aimq_serving.features import FeatureSpec
from aimq_serving.model_store import (
    ModelStore,
    ModelStoreError,
    NoModel,
    StoreUnavailable,
    TamperedModel,
    UnknownGroup,
)

SPEC = FeatureSpec.from_schema()


@pytest.fixture
def fresh_store(redis_client: redis.Redis) -> ModelStore:
    store = ModelStore(redis_client, f"aimqtest-store-{uuid.uuid4().hex[:8]}", b"k" * 32, keep_versions=3)
    yield store
    store.clear()


def _put(store: ModelStore, group: str = "A", value: float = 1.0, onnx: bytes = b"onnx-bytes") -> int:
    model = DummyRegressor(strategy="constant", constant=value).fit(np.zeros((1, 11)), [value])
    return store.put(group, onnx, model, SPEC, {"r2": 0.9}, {"dagster_run_id": "test"}, use_redisai=False)


def test_new_version_is_not_current_until_promoted(fresh_store: ModelStore) -> None:
    version = _put(fresh_store)
    with pytest.raises(NoModel, match="no model yet"):
        fresh_store.current_version("A")
    fresh_store.promote("A", version)
    stored = fresh_store.get("A")
    assert stored.info.version == version and stored.info.current
    assert stored.onnx == b"onnx-bytes"
    assert stored.spec == SPEC
    assert stored.info.metrics == {"r2": 0.9} and stored.info.lineage == {"dagster_run_id": "test"}
    assert stored.load_sklearn().predict(np.zeros((1, 11)))[0] == 1.0


def test_versions_are_numbered_per_group_and_immutable(fresh_store: ModelStore) -> None:
    assert [_put(fresh_store, "A"), _put(fresh_store, "A"), _put(fresh_store, "B")] == [1, 2, 1]
    assert fresh_store.version_numbers("A") == [1, 2]


def test_promote_publishes_an_event(fresh_store: ModelStore) -> None:
    version = _put(fresh_store)
    events = fresh_store.subscribe(timeout_s=0.2)
    next(events)  # subscribed
    fresh_store.promote("A", version)
    deadline = time.monotonic() + 5
    received = None
    while received is None and time.monotonic() < deadline:
        received = next(events)
    events.close()
    assert received == {"event": "promoted", "group": "A", "version": version}


def test_promote_refuses_a_version_that_does_not_exist(fresh_store: ModelStore) -> None:
    with pytest.raises(NoModel, match="no version 7"):
        fresh_store.promote("A", 7)


def test_rollback_to_previous_and_to_a_given_version(fresh_store: ModelStore) -> None:
    for _ in range(3):
        fresh_store.promote("A", _put(fresh_store))
    assert fresh_store.rollback("A") == 2
    assert fresh_store.current_version("A") == 2
    assert fresh_store.rollback("A", 3) == 3
    assert fresh_store.current_version("A") == 3


def test_rollback_without_an_older_version_is_a_clear_error(fresh_store: ModelStore) -> None:
    fresh_store.promote("A", _put(fresh_store))
    with pytest.raises(NoModel, match="no version older than 1"):
        fresh_store.rollback("A")


def test_prune_keeps_the_newest_and_never_the_current(fresh_store: ModelStore) -> None:
    versions = [_put(fresh_store) for _ in range(5)]
    fresh_store.promote("A", versions[0])  # an old version is current (after a rollback, say)
    assert fresh_store.prune("A") == [2]
    assert fresh_store.version_numbers("A") == [1, 3, 4, 5]
    assert fresh_store.get("A").info.version == 1


def test_delete_refuses_the_current_version(fresh_store: ModelStore) -> None:
    fresh_store.promote("A", _put(fresh_store))
    with pytest.raises(ModelStoreError, match="is current"):
        fresh_store.delete("A", 1)


def test_unknown_group(fresh_store: ModelStore) -> None:
    with pytest.raises(UnknownGroup, match="known groups: A, B, C"):
        fresh_store.current_version("Z")


@pytest.mark.parametrize("field", ["pickle", "onnx", "spec", "signature"])
def test_tampered_version_is_refused(fresh_store: ModelStore, field: str) -> None:
    fresh_store.promote("A", _put(fresh_store))
    fresh_store.client.hset(f"{fresh_store.prefix}:models:A:v:1", field, b"changed")
    with pytest.raises(TamperedModel, match="signature does not match"):
        fresh_store.get("A")


@pytest.mark.parametrize("field", ["pickle", "onnx", "spec"])
def test_a_refused_version_is_logged_once_naming_group_version_and_artifact(
    fresh_store: ModelStore,
    field: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fresh_store.promote("A", _put(fresh_store))
    fresh_store.client.hset(f"{fresh_store.prefix}:models:A:v:1", field, b"changed")
    with caplog.at_level("ERROR", logger="aimq_serving.model_store"):
        for _ in range(3):  # every request that meets it is refused; the log says it once
            with pytest.raises(TamperedModel) as refused:
                fresh_store.get("A")
    assert refused.value.artifacts == [field]
    assert f"changed after signing: {field}" in str(refused.value)
    [record] = caplog.records
    assert record.getMessage() == (
        f"refusing model group=A version=1: signature check failed: changed after signing: {field}"
    )
    assert (record.model_group, record.model_version, record.changed_artifacts) == ("A", 1, [field])


def test_a_changed_signature_or_another_key_is_logged_as_such(
    fresh_store: ModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    fresh_store.promote("A", _put(fresh_store))
    other = ModelStore(fresh_store.client, fresh_store.prefix, b"another-key", 3)
    with caplog.at_level("ERROR", logger="aimq_serving.model_store"), pytest.raises(TamperedModel) as refused:
        other.get("A")
    assert refused.value.artifacts == []
    assert "signature does not verify with this signing key" in caplog.records[0].getMessage()
    # A version repaired and then broken again is logged again.
    caplog.clear()
    key = f"{fresh_store.prefix}:models:A:v:1"
    original = fresh_store.client.hget(key, "pickle")
    fresh_store.client.hset(key, "pickle", b"changed")
    with caplog.at_level("ERROR", logger="aimq_serving.model_store"):
        with pytest.raises(TamperedModel):
            fresh_store.get("A")
        fresh_store.client.hset(key, "pickle", original)
        assert fresh_store.get("A").info.version == 1
        fresh_store.client.hset(key, "pickle", b"changed")
        with pytest.raises(TamperedModel):
            fresh_store.get("A")
    assert [r.changed_artifacts for r in caplog.records] == [["pickle"], ["pickle"]]


def test_a_missing_artifact_is_refused(fresh_store: ModelStore) -> None:
    fresh_store.promote("A", _put(fresh_store))
    fresh_store.client.hdel(f"{fresh_store.prefix}:models:A:v:1", "onnx")
    with pytest.raises(TamperedModel, match="artifacts missing: onnx") as refused:
        fresh_store.get("A")
    assert refused.value.artifacts == ["onnx"]


class _Exploit:
    """Unpickling this writes a file: proof of code execution."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "owned"))


def test_malicious_pickle_is_never_unpickled(fresh_store: ModelStore, tmp_path: Path) -> None:
    fresh_store.promote("A", _put(fresh_store))
    marker = tmp_path / "owned"
    fresh_store.client.hset(f"{fresh_store.prefix}:models:A:v:1", "pickle", pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(TamperedModel):
        fresh_store.get("A").load_sklearn()
    assert not marker.exists()


def test_a_store_with_another_key_refuses_the_versions(fresh_store: ModelStore) -> None:
    fresh_store.promote("A", _put(fresh_store))
    other = ModelStore(fresh_store.client, fresh_store.prefix, b"another-key", 3)
    with pytest.raises(TamperedModel):
        other.get("A")


def test_redis_down_is_a_clear_error_within_the_timeout() -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, socket_timeout=0.5)
    store = ModelStore(client, "aimqtest-down", b"k", 3)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="model store unavailable"):
        store.current_version("A")
    assert time.monotonic() - started < 5


def test_list_versions_reports_metadata_without_blobs(fresh_store: ModelStore) -> None:
    fresh_store.promote("A", _put(fresh_store))
    _put(fresh_store)
    listing = [v.as_dict() for v in fresh_store.list_versions("A")]
    assert [(v["version"], v["current"]) for v in listing] == [(1, True), (2, False)]
    assert listing[0]["spec_version"] == SPEC.version
    json.dumps(listing)  # serialisable as it is, for the API and the CLI
