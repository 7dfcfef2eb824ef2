"""Each group's drift_history (dg.materialize over scored_uploads materializations recorded in an
instance of its own) and the sensor that refreshes it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import dagster as dg
import pytest

from aimq_pipelines.monitoring.history import (
    DRIFT_HISTORIES,
    HISTORY_JOB,
    HISTORY_SENSOR,
    history_key,
    refresh,
)
from aimq_pipelines.monitoring.scored_uploads import materialization
from tests.helpers.drift_reports import group_report, report


@pytest.fixture
def fresh_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def record(instance: dg.DagsterInstance, upload_id: str, drift: dict, versions: dict[str, int]) -> None:
    instance.report_runless_asset_event(
        materialization(
            upload_id, original_name="f.xlsx", rows_total=10, rows_rejected=0, model_versions=versions, drift=drift
        )
    )


def test_drift_history_summarizes_the_groups_recent_uploads(fresh_instance: dg.DagsterInstance) -> None:
    verdicts = ["no_drift", "drift", "not_judged", "no_drift", "drift", "drift"]
    for n, verdict in enumerate(verdicts):
        drifted = ("kilometers",) if verdict == "drift" else ()
        record(fresh_instance, f"u{n}", report(A=group_report(verdict, drifted=drifted, version=2)), {"A": 2})
    record(fresh_instance, "only-b", report(B=group_report("drift", drifted=("color",))), {"B": 1})

    result = dg.materialize(DRIFT_HISTORIES, selection=[history_key("A")], instance=fresh_instance)
    (event,) = result.get_asset_materialization_events()
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    assert (meta["uploads"], meta["judged"], meta["drifted"]) == (6, 5, 3)
    assert meta["drift_share"] == pytest.approx(0.6)
    assert meta["drifting_streak"] == 2 and meta["latest_upload"] == "u5"
    rows = meta["recent_uploads"].records
    assert [r.data["upload_id"] for r in rows] == ["u5", "u4", "u3", "u2", "u1", "u0"]  # newest first
    assert rows[0].data["verdict"] == "drift" and rows[0].data["drifted_features"] == "kilometers"
    assert rows[3].data["drifted_features"] == "too few rows to judge" and rows[0].data["model_version"] == 2
    assert meta["chart"].startswith("![group A: drift per upload](data:image/png;base64,")


def test_a_group_without_uploads_has_an_empty_history(fresh_instance: dg.DagsterInstance) -> None:
    result = dg.materialize(DRIFT_HISTORIES, selection=[history_key("C")], instance=fresh_instance)
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["uploads"].value == 0 and "chart" not in meta


def test_the_sensor_refreshes_the_groups_with_new_uploads_at_most_once_per_interval(
    fresh_instance: dg.DagsterInstance,
) -> None:
    def tick(cursor: str | None, now: float) -> dg.SensorResult:
        context = dg.build_sensor_context(instance=fresh_instance, cursor=cursor, sensor_name=HISTORY_SENSOR)
        return refresh(context, refresh_s=300, now=now)

    nothing = tick(None, 1000.0)
    assert not nothing.run_requests
    record(fresh_instance, "u1", report(A=group_report("drift")), {"A": 1})
    first = tick(nothing.cursor, 1000.0)
    (request,) = first.run_requests
    assert request.job_name == HISTORY_JOB and request.asset_selection == [history_key("A")]
    record(fresh_instance, "u2", report(B=group_report("no_drift")), {"B": 1, "C": 1})
    held = tick(first.cursor, 1100.0)  # within the interval: remembered, not requested
    assert not held.run_requests and json.loads(held.cursor)["pending"] == ["B", "C"]
    later = tick(held.cursor, 1400.0)
    (request,) = later.run_requests
    assert request.asset_selection == [history_key("B"), history_key("C")]
    assert not tick(later.cursor, 2000.0).run_requests  # nothing new
