"""The score_upload job in process, with the real Redis, model store and Dagster instance."""

from __future__ import annotations

import hashlib
import shutil
import socket
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import fastexcel
import pytest

from aimq_pipelines.models.resources import ModelStoreResource
from aimq_pipelines.uploads import jobs
from aimq_pipelines.uploads.jobs import (
    RETRY_POLICY,
    backlog_run_config,
    backlog_run_tags,
    run_config,
    run_tags,
    runs_of_upload,
    score_file_op,
    score_upload_job,
    score_uploads_job,
)
from aimq_serving import schema
from aimq_serving.model_store import ModelStore
from aimq_serving.uploads.messages import UploadMessage
from aimq_serving.uploads.storage import UploadStorage, new_upload_id
from tests.helpers.corpus import xlsx_via_xlsxwriter
from tests.helpers.paths import SAMPLES


def stage(storage: UploadStorage, source: Path, fmt: str = "xlsx", *, sha256: str | None = None) -> UploadMessage:
    """What the API does before publishing: the file in place and its message."""
    upload_id = new_upload_id()
    target = storage.input_path(upload_id, fmt)
    target.parent.mkdir(parents=True)
    shutil.copyfile(source, target)
    return UploadMessage(
        upload_id=upload_id,
        format=fmt,
        sha256=sha256 or hashlib.sha256(target.read_bytes()).hexdigest(),
        size=target.stat().st_size,
        original_name=source.name,
        created_at=datetime.now(UTC),
    )


def run(job: dg.JobDefinition, message: UploadMessage, resources, instance) -> dg.ExecuteInProcessResult:
    return job.execute_in_process(
        run_config=run_config(message),
        tags=run_tags(message),
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )


def test_scores_and_records_the_upload(resources, storage, status, instance, trained_store: ModelStore) -> None:
    message = stage(storage, SAMPLES / "100_rows.xlsx")
    status.register(message)
    result = run(score_upload_job, message, resources, instance)
    assert result.success
    record = status.get(message.upload_id)
    assert record.state == "succeeded" and record.run_id == result.run_id
    assert (record.rows_total, record.rows_done, record.rows_rejected) == (100, 100, 0)
    assert record.rows_expected == 100  # from the sheet's dimension, before reading it
    assert record.model_versions == trained_store.current_versions()
    assert record.stats["peak_rss_mb"] > 0
    scored = fastexcel.read_excel(str(storage.result_path(message.upload_id, "xlsx"))).load_sheet(0).to_pandas()
    assert len(scored) == 100 and scored["predicted_price"].notna().all()
    assert storage.rejected_path(message.upload_id).is_file()
    assert not (storage.directory(message.upload_id) / "work").exists()
    output = result.get_step_success_events()[0]
    assert output.step_key == "score_file"
    logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    versions = ", ".join(f"{g} v{v}" for g, v in sorted(record.model_versions.items()))
    assert any("about 100 data rows) with models " + versions in m for m in logs)  # one line to start
    # drift against each version's profile: the sample file is drawn like the training data
    assert record.drift is not None and record.drift["verdict"] == "no_drift"
    assert {g: d["model_version"] for g, d in record.drift["groups"].items()} == record.model_versions
    # ... and one to end: a small file's run writes two lines of its own, each an event Dagster stores
    assert any("scored: 100 rows, 0 rejected; drift: none found (100 rows judged); stats" in m for m in logs)
    assert not any("rows done" in m for m in logs)  # its one part needs no progress line


def test_a_long_scoring_logs_its_progress(resources, storage, status, instance, monkeypatch) -> None:
    monkeypatch.setattr(jobs, "PROGRESS_LOG_S", 0.0)  # as if every part took longer than that
    message = stage(storage, SAMPLES / "100_rows.xlsx")
    status.register(message)
    result = run(score_upload_job, message, resources, instance)
    logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert any("100 rows done, 0 rejected" in m for m in logs)  # progress, in the run's log
    book = fastexcel.read_excel(str(storage.result_path(message.upload_id, "xlsx")))
    assert book.sheet_names == ["predictions", "drift", "rejected", "about"]
    sheet = book.load_sheet("drift").to_pandas()
    assert len(sheet) == 3 * 11 and not sheet["drifted"].any()
    assert set(sheet["feature"]) == set(schema.FEATURE_FIELDS)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"PK\x03\x04 this is no zip", "not a readable xlsx"), (None, "does not match the checksum")],
    ids=["corrupt", "checksum"],
)
def test_bad_input_fails_at_once_with_the_reason(
    resources, storage, status, instance, tmp_path: Path, content: bytes | None, reason: str
) -> None:
    source = tmp_path / "input.xlsx"
    source.write_bytes(content or (SAMPLES / "1_row.xlsx").read_bytes())
    message = stage(storage, source, sha256=None if content else "0" * 64)
    status.register(message)
    result = run(score_upload_job, message, resources, instance)
    assert not result.success
    record = status.get(message.upload_id)
    assert record.state == "failed" and reason in record.error
    events = [e.event_type for e in result.all_events]
    assert dg.DagsterEventType.STEP_UP_FOR_RETRY not in events  # bad input is never retried
    failure = result.get_step_failure_events()[0]
    assert reason in failure.step_failure_data.user_failure_data.description


def test_transient_failures_are_retried_then_reported(resources, storage, status, instance) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    quick = RETRY_POLICY._replace(delay=0.05)  # the real policy, without the real waits

    @dg.job(executor_def=dg.in_process_executor)
    def quick_retries() -> None:
        score_file_op.with_retry_policy(quick)()

    message = stage(storage, SAMPLES / "1_row.xlsx")
    status.register(message)
    result = run(quick_retries, message, {**resources, "model_store": ModelStoreResource(redis_url=dead)}, instance)
    assert not result.success
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retries) == RETRY_POLICY.max_retries
    record = status.get(message.upload_id)
    assert record.state == "failed" and f"gave up after {RETRY_POLICY.max_retries + 1} attempts" in record.error
    assert "model store unavailable" in record.error


def test_the_run_config_is_the_message(storage) -> None:
    message = stage(storage, SAMPLES / "1_row.xlsx")
    config = run_config(message).to_config_dict()["ops"]["score_file"]["config"]
    assert UploadMessage.model_validate(config) == message
    assert set(config) == set(UploadMessage.model_fields) - {"version"}  # what the Dagster UI shows


def test_a_hand_written_config_that_is_invalid_fails_without_retry(resources, storage, instance) -> None:
    message = stage(storage, SAMPLES / "1_row.xlsx")
    config = run_config(message).to_config_dict()
    config["ops"]["score_file"]["config"]["sha256"] = "not a checksum"
    result = score_upload_job.execute_in_process(
        run_config=config, instance=instance, resources=resources, raise_on_error=False
    )
    assert not result.success
    assert dg.DagsterEventType.STEP_UP_FOR_RETRY not in [e.event_type for e in result.all_events]
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data.description
    assert "invalid upload in the run config" in failure and "sha256" in failure


def test_a_run_created_before_stored_path_was_dropped_still_scores(resources, storage, status, instance) -> None:
    """Runs queued, or failed and re-executed, across a deploy keep their old config: the path in it
    is ignored (never followed), the upload's own input is scored."""
    message = stage(storage, SAMPLES / "1_row.xlsx")
    status.register(message)
    config = run_config(message).to_config_dict()
    config["ops"]["score_file"]["config"]["stored_path"] = "../../elsewhere/input.xlsx"
    result = score_upload_job.execute_in_process(
        run_config=config, tags=run_tags(message), instance=instance, resources=resources, raise_on_error=False
    )
    assert result.success
    record = status.get(message.upload_id)
    assert record.state == "succeeded" and record.rows_total == 1
    assert storage.result_path(message.upload_id, "xlsx").is_file()


def test_a_backlog_run_scores_each_upload_in_its_own_step_and_a_bad_one_fails_alone(
    resources, storage, status, instance, tmp_path: Path
) -> None:
    good = [stage(storage, SAMPLES / "1_row.xlsx"), stage(storage, SAMPLES / "100_rows.xlsx")]
    bad = stage(storage, SAMPLES / "1_row.xlsx", sha256="0" * 64)
    backlog = [good[0], bad, good[1]]
    for message in backlog:
        status.register(message)
    result = score_uploads_job.execute_in_process(
        run_config=backlog_run_config(backlog),
        tags=backlog_run_tags(backlog),
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )
    assert not result.success  # the run shows the failed upload ...
    scored = {e.step_key for e in result.get_step_success_events()}
    assert scored == {"list_uploads", *(f"score_listed_file[{m.upload_id}]" for m in good)}  # ... the others are scored
    for message, rows in zip(good, (1, 100)):
        record = status.get(message.upload_id)
        assert record.state == "succeeded" and record.run_id == result.run_id and record.rows_total == rows
        assert storage.result_path(message.upload_id, "xlsx").is_file()
    record = status.get(bad.upload_id)
    assert record.state == "failed" and "does not match the checksum" in record.error
    retried = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert retried == []  # bad input is not retried, in a backlog as alone
    # Which run scored upload X: a tag filter, for a backlog run as for a run of one upload.
    assert [r.run_id for m in backlog for r in runs_of_upload(instance, m.upload_id)] == [result.run_id] * 3


def _workbook(tmp_path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path = tmp_path / "input.xlsx"
    path.write_bytes(xlsx_via_xlsxwriter(header, rows))
    return path


def test_a_bad_value_rejects_its_row_at_once_never_retried(resources, storage, status, instance, tmp_path) -> None:
    """The finding of issue 29: 1e20 as an engine model failed the file after four attempts."""
    good = fastexcel.read_excel(str(SAMPLES / "1_row.xlsx")).load_sheet(0).to_pandas().iloc[0].tolist()
    bad = [1e20 if c == "model" else v for c, v in zip(schema.INPUT_COLUMNS, good)]
    message = stage(storage, _workbook(tmp_path, list(schema.INPUT_COLUMNS), [good, bad]))
    status.register(message)
    result = run(score_upload_job, message, resources, instance)
    assert result.success
    assert dg.DagsterEventType.STEP_UP_FOR_RETRY not in [e.event_type for e in result.all_events]
    record = status.get(message.upload_id)
    assert (record.state, record.rows_total, record.rows_rejected) == ("succeeded", 2, 1)


def test_a_feature_named_twice_fails_at_once(resources, storage, status, instance, tmp_path) -> None:
    good = fastexcel.read_excel(str(SAMPLES / "1_row.xlsx")).load_sheet(0).to_pandas().iloc[0].tolist()
    message = stage(storage, _workbook(tmp_path, [*schema.INPUT_COLUMNS, "kilometers"], [[*good, 7]]))
    status.register(message)
    result = run(score_upload_job, message, resources, instance)
    assert not result.success
    assert dg.DagsterEventType.STEP_UP_FOR_RETRY not in [e.event_type for e in result.all_events]
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert failure is not None  # a dg.Failure: allow_retries=False, so no run retry either
    record = status.get(message.upload_id)
    assert record.state == "failed" and record.error == "kilometers is in columns C and M; keep one"
