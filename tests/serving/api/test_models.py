"""GET /models: groups, versions, which is current, metrics and creation time."""

from __future__ import annotations

from datetime import datetime

import pytest
from fastapi.testclient import TestClient

from aimq_serving import schema
from aimq_serving.model_store import ModelStore


def test_models_lists_every_group_with_its_versions(client: TestClient, api_store: ModelStore) -> None:
    response = client.get("/models")
    assert response.status_code == 200
    groups = response.json()["groups"]
    assert set(groups) == set(schema.MODEL_GROUPS)
    for group, listing in groups.items():
        stored = api_store.list_versions(group)
        assert [v["version"] for v in listing["versions"]] == [i.version for i in stored]
        current = api_store.current_version(group)
        assert listing["current"] == current == listing["loaded"]
        (marked,) = [v for v in listing["versions"] if v["current"]]
        info = next(i for i in stored if i.version == current)
        assert marked["version"] == current
        assert marked["metrics"] == info.metrics and "r2" in marked["metrics"]
        assert marked["lineage"]["dagster_run_id"] == info.lineage["dagster_run_id"]
        assert datetime.fromisoformat(marked["created_at"]).timestamp() == pytest.approx(info.created_at, abs=1e-5)


def test_models_of_an_empty_store(make_client, api_settings) -> None:
    empty = api_settings.model_copy(update={"redis_prefix": api_settings.redis_prefix + "-nomodels"})
    body = make_client(empty, owns_prefix=True).get("/models").json()
    assert body == {"groups": {g: {"current": None, "loaded": None, "versions": []} for g in schema.MODEL_GROUPS}}
