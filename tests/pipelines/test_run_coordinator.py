"""PromptRunCoordinator on a real Dagster instance: a run submitted while nothing waits and a slot is
free is launched at once; otherwise it is queued as by Dagster's QueuedRunCoordinator.

The instance launches with Dagster's SyncInMemoryRunLauncher, which executes a launched run in this
process: a launched run has finished when ``submit_run`` returns, a queued one is QUEUED."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.run_coordinator import SubmitRunContext

from aimq_pipelines.run_coordinator import PromptRunCoordinator


@dg.op
def noop() -> None:
    pass


@dg.job
def quick() -> None:
    noop()


@pytest.fixture
def instance_with(tmp_path: Path) -> Iterator[Any]:
    opened: list[Any] = []

    def make(**config: Any) -> dg.DagsterInstance:
        overrides = {
            "run_coordinator": {
                "module": "aimq_pipelines.run_coordinator",
                "class": "PromptRunCoordinator",
                "config": {"max_concurrent_runs": 2, "dequeue_interval_seconds": 1, **config},
            },
            "run_launcher": {
                "module": "dagster._core.launcher.sync_in_memory_run_launcher",
                "class": "SyncInMemoryRunLauncher",
            },
        }
        home = tmp_path / f"home{len(opened)}"
        home.mkdir()
        context = dg.instance_for_test(overrides=overrides, temp_dir=str(home))
        opened.append(context)
        return context.__enter__()

    yield make
    for context in reversed(opened):
        context.__exit__(None, None, None)


# Where the run's job is, as the daemon would record it (the queue needs it); never loaded here.
REMOTE_ORIGIN = RemoteJobOrigin(RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("test"), "__repository__"), "quick")


def run_with(instance: dg.DagsterInstance, status: dg.DagsterRunStatus | None = None) -> dg.DagsterRun:
    origin = dg.reconstructable(quick).get_python_origin()
    return instance.create_run_for_job(
        job_def=quick, job_code_origin=origin, remote_job_origin=REMOTE_ORIGIN, status=status
    )


def submit(instance: dg.DagsterInstance) -> dg.DagsterRun:
    run = run_with(instance)
    instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))
    submitted = instance.get_run_by_id(run.run_id)
    assert submitted is not None
    return submitted


def enqueued(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    return bool(instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED).records)


def test_the_configured_coordinator_is_dagsters_run_queue(instance_with: Any) -> None:
    instance = instance_with()
    assert isinstance(instance.run_coordinator, PromptRunCoordinator)
    # The queue daemon runs for any QueuedRunCoordinator, and reads its options from it.
    assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
    assert instance.run_coordinator.get_run_queue_config().max_concurrent_runs == 2


def test_the_queue_daemon_looks_every_half_second_when_asked(instance_with: Any) -> None:
    from dagster._daemon.controller import create_daemon_of_type
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

    queue = QueuedRunCoordinatorDaemon.daemon_type()
    assert create_daemon_of_type(queue, instance_with()).interval_seconds == 1  # Dagster's option, as before
    assert create_daemon_of_type(queue, instance_with(dequeue_interval_ms=500)).interval_seconds == 0.5
    with pytest.raises(dg.DagsterInvalidConfigError, match="dequeue_interval_ms is 200: at least 500"):
        instance_with(dequeue_interval_ms=200).run_coordinator  # noqa: B018 - loading it is the check


def test_a_run_submitted_to_an_idle_instance_is_launched_at_once(instance_with: Any) -> None:
    instance = instance_with()
    run = submit(instance)
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert not enqueued(instance, run)


def test_a_run_never_jumps_the_queue(instance_with: Any) -> None:
    instance = instance_with()
    run_with(instance, dg.DagsterRunStatus.QUEUED)
    run = submit(instance)
    assert run.status == dg.DagsterRunStatus.QUEUED and enqueued(instance, run)


def test_a_run_waits_when_every_slot_is_taken(instance_with: Any) -> None:
    instance = instance_with()
    first, _ = run_with(instance, dg.DagsterRunStatus.STARTED), run_with(instance, dg.DagsterRunStatus.STARTING)
    waiting = submit(instance)
    assert waiting.status == dg.DagsterRunStatus.QUEUED and enqueued(instance, waiting)
    # A slot frees up and nothing waits any more: the next run goes at once again.
    instance.report_run_failed(first)
    instance.report_run_canceled(waiting)
    assert submit(instance).status == dg.DagsterRunStatus.SUCCESS


def test_without_a_limit_every_run_goes_at_once(instance_with: Any) -> None:
    instance = instance_with(max_concurrent_runs=-1)
    for _ in range(3):
        run_with(instance, dg.DagsterRunStatus.STARTED)
    assert submit(instance).status == dg.DagsterRunStatus.SUCCESS


def test_tag_concurrency_limits_leave_every_run_to_the_daemon(instance_with: Any) -> None:
    instance = instance_with(tag_concurrency_limits=[{"key": "aimq/kind", "limit": 1}])
    run = submit(instance)
    assert run.status == dg.DagsterRunStatus.QUEUED and enqueued(instance, run)
