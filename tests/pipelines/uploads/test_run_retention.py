"""Dagster's storage follows the uploads' retention (aimq_pipelines/uploads/run_retention.py), against a
real Dagster instance of its own (SQLite in a temporary DAGSTER_HOME: the session's instance holds
other tests' runs) and the real Redis for the upload status records."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import dagster as dg
import pytest
import redis

from aimq_pipelines.uploads.jobs import UPLOAD_COUNT_TAG, UPLOAD_ID_TAG, upload_tag
from aimq_pipelines.uploads.purge import purge_uploads_job
from aimq_pipelines.uploads.resources import UploadsResource
from aimq_pipelines.uploads.run_retention import (
    purge_purge_runs,
    purge_scoring_runs,
    purge_training_runs,
    purge_upload_sensor_ticks,
)
from aimq_serving.settings import AimqSettings
from aimq_serving.uploads.status import UploadStatusStore
from aimq_serving.uploads.storage import UploadStorage
from tests.helpers.daemon_loop import sensor_iteration, use_code_location_env
from tests.helpers.redis_keys import clear_prefix
from tests.helpers.upload_records import DAY, NOW, upload

RETENTION_DAYS = 7
LATER = NOW + 2 * RETENTION_DAYS * DAY  # when every run made now is older than the retention


@pytest.fixture
def own_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def prefix(settings: AimqSettings, redis_client: redis.Redis) -> Iterator[str]:
    own = f"{settings.redis_prefix}-runs-{uuid.uuid4().hex[:6]}"
    yield own
    clear_prefix(redis_client, own)


def _run(
    instance: dg.DagsterInstance,
    job_name: str,
    uploads: Sequence[str] = (),
    status: dg.DagsterRunStatus = dg.DagsterRunStatus.SUCCESS,
    groups: list[str] | None = None,
) -> str:
    """A run as the sensor or the schedule leaves it (its tags, status and asset selection), with one
    event in its log."""
    tags = {upload_tag(u): u for u in uploads}
    if len(uploads) == 1:
        tags[UPLOAD_ID_TAG] = uploads[0]
    elif uploads:
        tags[UPLOAD_COUNT_TAG] = str(len(uploads))
    selection = None if groups is None else frozenset(dg.AssetKey([g, "served_model"]) for g in groups)
    run = instance.add_run(
        dg.DagsterRun(job_name=job_name, run_id=uuid.uuid4().hex, tags=tags, status=status, asset_selection=selection)
    )
    instance.report_engine_event("made by the test", run)
    return run.run_id


def _left(instance: dg.DagsterInstance, run_ids: list[str]) -> list[str]:
    return [run_id for run_id in run_ids if instance.get_run_by_id(run_id) is not None]


def test_a_scoring_run_is_deleted_with_its_log_once_every_upload_it_scored_is_purged(
    own_instance: dg.DagsterInstance, settings: AimqSettings, prefix: str, tmp_path: Path
) -> None:
    status = UploadStatusStore(settings.redis_client(), prefix)
    storage = UploadStorage(tmp_path)
    kept_upload = upload(status, storage, created_days_ago=1, finished_days_ago=1)
    purged = [uuid.uuid4().hex for _ in range(5)]  # no status record: purged

    alone = _run(own_instance, "score_upload", [purged[0]])
    retried = _run(own_instance, "score_upload", [purged[0]], status=dg.DagsterRunStatus.FAILURE)
    backlog_all_purged = _run(own_instance, "score_uploads", [purged[1], purged[2]])
    backlog_one_kept = _run(own_instance, "score_uploads", [purged[3], kept_upload])
    of_a_kept_upload = _run(own_instance, "score_upload", [kept_upload])
    running = _run(own_instance, "score_upload", [purged[4]], status=dg.DagsterRunStatus.STARTED)
    nobodys = _run(own_instance, "score_upload", [])
    everything = [alone, retried, backlog_all_purged, backlog_one_kept, of_a_kept_upload, running, nobodys]

    # Within the retention period nothing goes, purged uploads or not.
    report = purge_scoring_runs(own_instance, status, older_than_s=RETENTION_DAYS * DAY, now=NOW)
    assert report.scoring_runs_deleted == 0 and _left(own_instance, everything) == everything

    report = purge_scoring_runs(own_instance, status, older_than_s=RETENTION_DAYS * DAY, now=LATER)
    assert (report.scoring_runs_deleted, report.scoring_runs_kept) == (3, 3)
    assert _left(own_instance, everything) == [backlog_one_kept, of_a_kept_upload, running, nobodys]
    assert own_instance.all_logs(alone) == [] and own_instance.all_logs(backlog_one_kept) != []


def test_a_deleted_run_leaves_no_files(own_instance: dg.DagsterInstance) -> None:
    # The local instance's per-run event-log file and the run's folder of compute logs and step
    # outputs: DagsterInstance.delete_run left both (found by benchmarks/soak_benchmark.py: ~190 KB a run).
    done, kept = _run(own_instance, "purge_uploads"), _run(own_instance, "purge_uploads")
    shards = {r: Path(own_instance.event_log_storage.path_for_shard(r)) for r in (done, kept)}
    folders = {r: Path(own_instance.storage_directory()) / r for r in (done, kept)}
    for run_id in (done, kept):
        (folders[run_id] / "compute_logs").mkdir(parents=True)
        (folders[run_id] / "compute_logs" / "step.out").write_text("a step's stdout")
        assert shards[run_id].exists()

    own_instance.delete_run(kept)  # Dagster's own delete, for the contrast
    purge_purge_runs(own_instance, older_than_s=0, now=LATER)
    assert not shards[done].exists() and not folders[done].exists()
    assert own_instance.get_run_by_id(kept) is None and shards[kept].exists() and folders[kept].exists()


def test_training_runs_keep_the_newest_per_group(own_instance: dg.DagsterInstance) -> None:
    # Oldest first: all groups (no selection), then A alone, then B alone, then all groups again.
    oldest_all = _run(own_instance, "train_models")
    a_old, a_new = _run(own_instance, "train_models", groups=["A"]), _run(own_instance, "train_models", groups=["A"])
    b_only = _run(own_instance, "train_models", groups=["B"])
    newest_all = _run(own_instance, "train_models")
    failed_a = _run(own_instance, "train_models", groups=["A"], status=dg.DagsterRunStatus.FAILURE)
    running = _run(own_instance, "train_models", groups=["C"], status=dg.DagsterRunStatus.STARTED)
    scoring = _run(own_instance, "score_upload", [uuid.uuid4().hex])

    report = purge_training_runs(own_instance, keep_per_group=2)
    # Newest first, the two kept per group: A: failed_a, newest_all; B: newest_all, b_only;
    # C: newest_all, oldest_all. a_new and a_old are the third and fourth of A, and of no other group.
    assert report.training_runs_deleted == 2
    assert _left(own_instance, [oldest_all, a_old, a_new, b_only, newest_all, failed_a, running, scoring]) == [
        oldest_all,
        b_only,
        newest_all,
        failed_a,
        running,
        scoring,
    ]


def test_the_purge_jobs_own_runs_go_once_older_than_the_retention(own_instance: dg.DagsterInstance) -> None:
    # One a minute in the soak benchmark, one a day by default: kept forever, they were the one run
    # count that still grew without end.
    done = _run(own_instance, "purge_uploads")
    failed = _run(own_instance, "purge_uploads", status=dg.DagsterRunStatus.FAILURE)
    running = _run(own_instance, "purge_uploads", status=dg.DagsterRunStatus.STARTED)
    training = _run(own_instance, "train_models")
    everything = [done, failed, running, training]

    report = purge_purge_runs(own_instance, older_than_s=RETENTION_DAYS * DAY, now=NOW)
    assert report.purge_runs_deleted == 0 and _left(own_instance, everything) == everything
    report = purge_purge_runs(own_instance, older_than_s=RETENTION_DAYS * DAY, now=LATER)
    assert report.purge_runs_deleted == 2 and _left(own_instance, everything) == [running, training]


def test_the_purge_job_deletes_uploads_then_their_runs_and_old_training_runs(
    own_instance: dg.DagsterInstance, settings: AimqSettings, prefix: str, tmp_path: Path
) -> None:
    status = UploadStatusStore(settings.redis_client(), prefix)
    storage = UploadStorage(tmp_path)
    expired = upload(status, storage, created_days_ago=10, finished_days_ago=9)
    kept = upload(status, storage, created_days_ago=1, finished_days_ago=1)
    # Runs made now are younger than the retention, whatever their uploads' age: the job keeps them
    # (the rule with a later clock: the first test); the training runs beyond the newest one go.
    runs = [_run(own_instance, "score_upload", [expired]), _run(own_instance, "score_upload", [kept])]
    training = [_run(own_instance, "train_models") for _ in range(3)]

    resource = UploadsResource(
        upload_dir=str(tmp_path), redis_prefix=prefix, upload_retention_days=RETENTION_DAYS, training_runs_kept=1
    )
    result = purge_uploads_job.execute_in_process(instance=own_instance, resources={"uploads": resource})
    assert result.success
    assert result.output_for_node("purge_finished_uploads") == 1
    assert result.output_for_node("purge_dagster_runs") == 2
    assert _left(own_instance, runs) == runs and _left(own_instance, training) == training[-1:]
    metadata = next(
        e.event_specific_data.metadata
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_OUTPUT and e.step_key == "purge_dagster_runs"
    )
    assert metadata["training_runs_deleted"].value == 2 and metadata["scoring_runs_deleted"].value == 0
    assert metadata["purge_runs_deleted"].value == 0  # the job's own run is in progress, and recent


def test_every_instance_purges_sensor_and_schedule_ticks(instance: dg.DagsterInstance) -> None:
    # The session's instance is made from aimq_cli/dagster.yaml; compose and k8s render the same
    # common.yaml fragment (tests/deploy/test_render_config.py).
    assert instance.get_settings("retention") == {
        "schedule": {"purge_after_days": 30},
        "sensor": {"purge_after_days": {"skipped": 1, "failure": 30, "success": 30}},
    }


def test_the_upload_sensors_ticks_go_once_older_than_the_retention(
    uploads_settings: AimqSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Real ticks, from Dagster's own sensor daemon loop on an empty queue: the upload sensors' and the
    run-failure sensor's go once older than the retention, the other sensors' stay (dagster.yaml's
    retention purges those, by whole days)."""
    use_code_location_env(monkeypatch, uploads_settings, AIMQ_SENSOR_SHARDS="2", AIMQ_SENSOR_WAIT_S="0")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        sensor_iteration(instance)

        def ticks() -> dict[str, int]:
            sensors = instance.all_instigator_state()
            return {s.instigator_name: len(instance.get_ticks(s.instigator_origin_id, s.selector_id)) for s in sensors}

        made = ticks()
        assert made["upload_sensor"] == made["upload_sensor_2"] == made["upload_run_failure"] == 1
        others = {name for name in made if name not in ("upload_sensor", "upload_sensor_2", "upload_run_failure")}
        assert others and all(made[name] == 1 for name in others)  # drift_retrain, drift_history_refresh

        # Within the retention nothing goes.
        purged = purge_upload_sensor_ticks(instance, older_than_s=60)
        assert purged == ["upload_run_failure", "upload_sensor", "upload_sensor_2"]
        assert ticks() == made
        purge_upload_sensor_ticks(instance, older_than_s=60, now=time.time() + 120)
        assert ticks() == {**made, "upload_sensor": 0, "upload_sensor_2": 0, "upload_run_failure": 0}
