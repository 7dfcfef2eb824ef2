"""The drift_retrain sensor, evaluated with build_sensor_context over scored_uploads materializations
recorded in a Dagster instance of its own (no training run in it: the cooldown starts clean)."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest

from aimq_pipelines.definitions import defs
from aimq_pipelines.monitoring.retrain import (
    GROUP_TAG,
    REASON_TAG,
    RETRAIN_SENSOR,
    RetrainState,
    ScoredUpload,
    chain_of,
    drift_retrain,
    feed,
)
from aimq_pipelines.monitoring.scored_uploads import materialization
from aimq_serving.settings import get_settings
from tests.helpers.drift_reports import group_report, report


@pytest.fixture
def fresh_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def record_upload(instance: dg.DagsterInstance, n: int, drift: dict) -> None:
    instance.report_runless_asset_event(
        materialization(
            f"upload{n:02d}",
            original_name=f"file{n}.xlsx",
            rows_total=400,
            rows_rejected=0,
            model_versions={"A": 1, "B": 1},
            drift=drift,
        )
    )


def tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, sensor_name=RETRAIN_SENSOR, definitions=defs)
    return drift_retrain(context)


def test_drift_from_upload_11_requests_exactly_one_retrain_by_upload_14(fresh_instance: dg.DagsterInstance) -> None:
    settings = get_settings()
    assert settings.retrain_drift_uploads == 3 and settings.retrain_cooldown_s >= 3600  # the defaults
    cursor = None
    requested: list[tuple[int, dg.RunRequest]] = []
    for n in range(1, 31):
        drifting = n >= 11
        drift = report(
            A=group_report("drift" if drifting else "no_drift", drifted=("kilometers",) if drifting else ()),
            B=group_report("no_drift"),
        )
        record_upload(fresh_instance, n, drift)
        result = tick(fresh_instance, cursor)
        cursor = result.cursor
        requested += [(n, r) for r in result.run_requests or []]

    assert len(requested) == 1, [(n, r.tags) for n, r in requested]
    ((n, request),) = requested
    assert 11 <= n <= 14
    assert request.job_name == "train_models"
    assets, checks = chain_of("A")
    assert set(request.asset_selection) == set(assets) and {k.path[0] for k in request.asset_selection} == {"A"}
    assert dg.AssetCheckKey(dg.AssetKey(["A", "trained_model"]), "champion_challenger") in request.asset_check_keys
    assert set(request.asset_check_keys) == set(checks)
    assert request.tags[GROUP_TAG] == "A"
    assert request.tags[REASON_TAG].startswith("drift in 3 consecutive judged uploads of group A (k=3; last: ")
    assert "upload11, upload12, upload13" in request.tags[REASON_TAG]
    assert request.tags[REASON_TAG].endswith("drifted features: kilometers")


def test_not_judged_uploads_neither_count_nor_break_a_streak(fresh_instance: dg.DagsterInstance) -> None:
    verdicts = ["drift", "drift", "no_drift", "drift", "not_judged", "drift", "not_judged", "drift"]
    cursor = None
    requested = []
    for n, verdict in enumerate(verdicts, start=1):
        record_upload(fresh_instance, n, report(A=group_report(verdict, drifted=("color",) * (verdict == "drift"))))
        result = tick(fresh_instance, cursor)
        cursor = result.cursor
        requested += [n for _ in result.run_requests or []]
    # The no_drift at 3 resets; 4, 6 and 8 are three consecutive judged drifting uploads.
    assert requested == [8]


def test_a_recent_training_run_holds_the_request_until_the_cooldown_passed() -> None:
    drifting = [ScoredUpload(i, f"u{i}", {"A": "drift"}, {"A": ["kilometers"]}) for i in range(1, 8)]
    state = RetrainState()
    hour = 3600.0
    # Group A was trained 30 minutes ago (by the schedule, say): streaks complete but wait.
    assert feed(state, drifting[:5], k=3, cooldown_s=hour, last_trained={"A": 0.0}, now=0.5 * hour) == []
    # Once the cooldown has passed, the next drifting upload asks, once, and the count starts again.
    (request,) = feed(state, drifting[5:6], k=3, cooldown_s=hour, last_trained={"A": 0.0}, now=1.5 * hour)
    assert request.upload_id == "u6" and request.group == "A"
    assert feed(state, drifting[6:], k=3, cooldown_s=0, last_trained={"A": 0.0}, now=2 * hour) == []
    # The request itself counts as the last retrain for the next cooldown.
    more = [ScoredUpload(i, f"u{i}", {"A": "drift"}, {}) for i in range(8, 11)]
    assert feed(state, more, k=3, cooldown_s=hour, last_trained={"A": 0.0}, now=2 * hour) == []


def test_the_cursor_survives_a_round_trip() -> None:
    state = RetrainState()
    feed(state, [ScoredUpload(7, "u7", {"C": "drift"}, {"C": ["fuel"]})], k=3, cooldown_s=0, last_trained={}, now=1.0)
    again = RetrainState.from_cursor(state.to_cursor())
    assert again.after == 7 and again.groups["C"].streak == ["u7"] and again.groups["C"].features == ["fuel"]


def test_an_upload_scored_again_counts_once() -> None:
    again = [ScoredUpload(i, "same", {"B": "drift"}, {}) for i in range(1, 4)]
    state = RetrainState()
    assert feed(state, again, k=3, cooldown_s=0, last_trained={}, now=0.0) == []
    assert state.groups["B"].streak == ["same"]
