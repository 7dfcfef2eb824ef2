"""Scored uploads in Dagster: a real scoring run (in process, real Redis and model store) reports its
upload as a partition of scored_uploads with metadata and check results; the checks run from the UI
read the recorded status again."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from aimq_pipelines.models.synthetic import generate_listings
from aimq_pipelines.monitoring.scored_uploads import (
    SCORED_UPLOADS,
    UPLOAD_PARTITIONS,
    evaluate_drift,
    input_drift,
    input_schema,
    scored_uploads,
)
from aimq_pipelines.uploads.jobs import backlog_run_config, backlog_run_tags, score_upload_job, score_uploads_job
from aimq_serving import schema
from tests.helpers.drift_reports import group_report, report
from tests.helpers.paths import SAMPLES
from tests.pipelines.uploads.test_jobs import run, stage


def _events(instance: dg.DagsterInstance, upload_id: str) -> tuple[list, dict[str, dg.AssetCheckEvaluation]]:
    materializations = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SCORED_UPLOADS, asset_partitions=[upload_id]), limit=10
    ).records
    checks = {}
    for name in ("input_drift", "input_schema"):
        history = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(SCORED_UPLOADS, name), limit=200
        )
        mine = [r for r in history if r.partition == upload_id]  # newest first
        if mine:
            checks[name] = mine[0].event.dagster_event.event_specific_data
    return materializations, checks


def _drifting_csv(tmp_path: Path) -> Path:
    frame = generate_listings("A", 400, seed=41)
    frame["kilometers"] = 1_900_000  # inside the schema, far beyond the training range
    path = tmp_path / "drifting.csv"
    frame[list(schema.INPUT_COLUMNS)].to_csv(path, index=False)
    return path


def test_a_scored_upload_is_a_partition_with_its_metadata_and_checks(
    resources, storage, status, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    message = stage(storage, _drifting_csv(tmp_path), "csv")
    status.register(message)
    result = run(score_upload_job, message, resources, instance)
    assert result.success
    record = status.get(message.upload_id)
    assert message.upload_id in instance.get_dynamic_partitions(UPLOAD_PARTITIONS.name)
    (materialization,) = _events(instance, message.upload_id)[0]
    meta = {k: v.value for k, v in materialization.asset_materialization.metadata.items()}
    assert meta["dagster/row_count"] == 400 and meta["rows_rejected"] == 0
    assert meta["model_versions"] == record.model_versions and meta["model_version_A"] == record.model_versions["A"]
    assert meta["drift_verdict"] == record.drift["verdict"] == "drift"
    assert meta["group_verdicts"] == {"A": "drift"}
    assert "kilometers" in [f["name"] for f in meta["drift"]["groups"]["A"]["drifted_features"]]
    checks = _events(instance, message.upload_id)[1]
    drift = checks["input_drift"]
    assert not drift.passed and drift.severity == dg.AssetCheckSeverity.WARN
    assert drift.description.startswith("drift: group A: ") and "kilometers" in drift.description
    assert checks["input_schema"].passed


def test_an_upload_missing_columns_fails_input_schema_with_error(
    resources, storage, status, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    source = tmp_path / "short.csv"
    generate_listings("B", 5, seed=1)[["model_group", "kilometers"]].to_csv(source, index=False)
    message = stage(storage, source, "csv")
    status.register(message)
    result = run(score_upload_job, message, resources, instance)
    assert not result.success
    materializations, checks = _events(instance, message.upload_id)
    assert materializations == []  # nothing was scored
    check = checks["input_schema"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.description == status.get(message.upload_id).error and "missing" in check.description
    assert "input_drift" not in checks


def test_a_backlog_run_reports_each_upload(resources, storage, status, instance: dg.DagsterInstance) -> None:
    backlog = [stage(storage, SAMPLES / "1_row.xlsx"), stage(storage, SAMPLES / "100_rows.xlsx")]
    for message in backlog:
        status.register(message)
    result = score_uploads_job.execute_in_process(
        run_config=backlog_run_config(backlog),
        tags=backlog_run_tags(backlog),
        instance=instance,
        resources=resources,
    )
    assert result.success
    for message, rows in zip(backlog, (1, 100)):
        (materialization,) = _events(instance, message.upload_id)[0]
        assert materialization.run_id == result.run_id
        assert materialization.asset_materialization.metadata["dagster/row_count"].value == rows
    one_row = _events(instance, backlog[0].upload_id)[1]["input_drift"]
    assert one_row.passed and one_row.description.startswith("not judged: ")


def test_the_checks_run_from_the_ui_read_the_recorded_status_again(
    resources, storage, status, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    message = stage(storage, _drifting_csv(tmp_path), "csv")
    status.register(message)
    assert run(score_upload_job, message, resources, instance).success
    job = dg.Definitions(
        assets=[scored_uploads],
        asset_checks=[input_drift, input_schema],
        jobs=[dg.define_asset_job("check_upload", selection=dg.AssetSelection.checks_for_assets(SCORED_UPLOADS))],
        resources=resources,
    ).resolve_job_def("check_upload")
    result = job.execute_in_process(tags={"dagster/partition": message.upload_id}, instance=instance)
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not evaluations["input_drift"].passed and evaluations["input_drift"].severity == dg.AssetCheckSeverity.WARN
    assert evaluations["input_schema"].passed
    assert evaluations["input_drift"].description == _events(instance, message.upload_id)[1]["input_drift"].description


@pytest.mark.parametrize(
    ("drift", "passed", "description"),
    [
        (report(A=group_report("drift", drifted=("color", "kilometers"))), False, "drift: group A: color, kilometers"),
        (report(A=group_report("no_drift", rows=300)), True, "no drift in 300 rows judged"),
        (report(B=group_report("not_judged")), True, "not judged: too few rows to judge"),
        (None, True, "not judged: no drift report was recorded for this upload"),
    ],
)
def test_input_drift_says_what_it_found(drift: dict | None, passed: bool, description: str) -> None:
    evaluation = evaluate_drift("u1", drift)
    assert (evaluation.passed, evaluation.description) == (passed, description)
    assert evaluation.severity == dg.AssetCheckSeverity.WARN and evaluation.partition == "u1"
