"""Drift of a file against the profile of the session's trained model (fixed seeds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aimq_pipelines.models.synthetic import generate_listings
from aimq_pipelines.monitoring.drift import DriftReport
from aimq_pipelines.monitoring.monitor import Compared, DriftMonitor, DriftSettings
from aimq_serving.drift_profile import DriftProfile
from aimq_serving.model_store import ModelStore, StoredModel


@pytest.fixture(scope="module")
def stored(trained_store: ModelStore) -> StoredModel:
    return trained_store.get("A")


def judge(
    stored: StoredModel, frame: pd.DataFrame, *, profile: DriftProfile | None = None, batches: int = 1
) -> DriftReport:
    version = stored.info.version
    monitor = DriftMonitor({"A": Compared(version, stored.spec.columns, profile or stored.profile)}, DriftSettings())
    for part in np.array_split(np.arange(len(frame)), batches):
        sub = frame.iloc[part]
        matrix, valid, _ = stored.spec.encode_frame(sub)
        monitor.add("A", matrix, sub.iloc[np.flatnonzero(~valid)])
    return monitor.report()


def most_important_numeric(stored: StoredModel) -> str:
    assert stored.profile is not None
    return max((f for f in stored.profile.features if f.kind == "numeric"), key=lambda f: f.importance).name


def test_a_clean_file_is_judged_without_drift(stored: StoredModel) -> None:
    report = judge(stored, generate_listings("A", 1000, seed=101))
    assert (report.verdict, report.reason, report.rows_judged) == ("no_drift", None, 1000)
    group = report.groups["A"]
    assert group.model_version == group.profile_version == stored.info.version
    assert {f.name for f in group.features} == set(stored.spec.columns)
    assert not any(f.drifted for f in group.features)
    assert all(f.value > f.threshold for f in group.features)


def test_a_shifted_feature_is_the_one_flagged_and_batches_add_up(stored: StoredModel) -> None:
    name = most_important_numeric(stored)
    frame = generate_listings("A", 1000, seed=102)
    profile = stored.profile.feature(name)  # type: ignore[union-attr]
    frame[name] = frame[name] + round(0.5 * profile.std)
    report = judge(stored, frame)
    assert report.verdict == "drift"
    assert [f.name for f in report.groups["A"].drifted_features] == [name]
    assert judge(stored, frame, batches=7).to_json() == report.to_json()
    flagged = report.groups["A"].drifted_features[0]
    assert flagged.statistic == "cell_p_value" and flagged.value <= flagged.threshold
    assert sum(flagged.upload) == pytest.approx(1.0, abs=1e-3) and len(flagged.upload) == len(flagged.cells)


def test_unseen_categories_count_though_their_rows_are_refused(stored: StoredModel) -> None:
    frame = generate_listings("A", 200, seed=103)
    frame["fuel_type"] = frame["fuel_type"].astype(object)
    frame.loc[frame.index[::10], "fuel_type"] = "Hydrogen"
    report = judge(stored, frame)
    assert report.verdict == "drift"
    fuel = next(f for f in report.groups["A"].features if f.name == "fuel_type")
    assert fuel.drifted and fuel.unseen_share == pytest.approx(0.1)


def test_values_beyond_the_training_range_and_missing_cells_count(stored: StoredModel) -> None:
    frame = generate_listings("A", 500, seed=104).astype(object)
    frame.loc[frame.index[:100], "kilometers"] = 1_900_000  # inside the schema, beyond training
    frame.loc[frame.index[100:200], "color"] = None
    report = judge(stored, frame)
    features = {f.name: f for f in report.groups["A"].features}
    assert features["kilometers"].drifted and features["kilometers"].out_of_range_share == pytest.approx(0.2, abs=0.01)
    assert features["color"].drifted and features["color"].missing_rate == pytest.approx(0.2, abs=0.01)


def test_too_few_rows_are_not_judged(stored: StoredModel) -> None:
    report = judge(stored, generate_listings("A", 12, seed=105))
    assert report.verdict == "not_judged" and report.rows_judged == 0
    assert report.reason == "too few rows to judge: 12 rows of group A, at least 30 are needed"
    assert report.groups["A"].features == ()


def test_rows_without_any_feature_are_not_judged(stored: StoredModel) -> None:
    frame = generate_listings("A", 50, seed=106).astype(object)
    frame.loc[:, list(stored.spec.columns)] = None
    report = judge(stored, frame)
    assert report.verdict == "not_judged"
    assert report.reason == "every feature is missing in the 50 rows of group A"


def test_a_version_without_a_profile_is_not_judged(stored: StoredModel) -> None:
    version = stored.info.version
    monitor = DriftMonitor({"A": Compared(version, stored.spec.columns, None)})
    frame = generate_listings("A", 100, seed=107)
    matrix, _, _ = stored.spec.encode_frame(frame)
    monitor.add("A", matrix, frame.iloc[:0])
    report = monitor.report()
    assert report.verdict == "not_judged" and "stored before drift profiles" in (report.reason or "")
    assert report.groups["A"].profile_version is None and report.groups["A"].rows == 100


def test_nothing_to_judge() -> None:
    report = DriftMonitor({}).report()
    assert report.to_json() == {
        "verdict": "not_judged",
        "reason": "no rows of a model group with a served model to judge",
        "rows_judged": 0,
        "groups": {},
    }


def test_the_report_json_is_the_contract(stored: StoredModel) -> None:
    body = judge(stored, generate_listings("A", 100, seed=108)).to_json()
    assert set(body) == {"verdict", "reason", "rows_judged", "groups"}
    group = body["groups"]["A"]
    assert set(group) == {"verdict", "reason", "rows", "model_version", "profile_version", "features"}
    assert set(group["features"][0]) >= {
        "name",
        "kind",
        "statistic",
        "value",
        "threshold",
        "drifted",
        "importance",
        "missing_rate",
        "unseen_share",
        "out_of_range_share",
    }
