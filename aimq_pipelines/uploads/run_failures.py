"""The run-failure sensor of batch scoring: a scoring run that died without finishing its uploads
(a crash, a termination) leaves them failed, unless Dagster's run-retry daemon retries the run
(and it makes sure the daemon did: ``retry_created``)."""

import logging
import time

import dagster as dg

from aimq_pipelines import dagster_internals
from aimq_pipelines.uploads.jobs import SCORING_JOBS, uploads_of
from aimq_pipelines.uploads.resources import UploadsResource
from aimq_serving.settings import get_settings

log = logging.getLogger(__name__)

# Dagster's tag on a failed run saying whether its retry daemon retries it (dagster._core.storage.tags).
WILL_RETRY_TAG = "dagster/will_retry"
# How long the run-failure sensor waits for a failed run's status to catch up with its failure
# event (two consecutive writes of the reporting process; see retry_follows). Generous against a
# process descheduled on a busy machine, and well inside Dagster's sensor evaluation timeout (60 s).
RUN_STATUS_SETTLE_S = 20.0
# Dagster's tag on a failed run naming the retry its daemon created.
AUTO_RETRY_RUN_ID_TAG = "dagster/auto_retry_run_id"
# The daemon retries a failed run within ~1-2 s (it looks every second); after this long without
# a retry, its cursor is rewound (retry_created), at most REWINDS times. With the settle above, a
# sensor evaluation stays well inside Dagster's 60 s timeout.
RETRY_APPEAR_S = 8.0
REWINDS = 2
# How many failure events before the daemon's cursor are searched for the run's own.
REWIND_SCAN = 1000


RUN_FAILURE_SENSOR = "upload_run_failure"


@dg.run_failure_sensor(
    name=RUN_FAILURE_SENSOR,
    monitored_jobs=list(SCORING_JOBS),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=get_settings().sensor_interval_s,
    description="Marks an upload failed when its scoring run died without doing so (crash, "
    "termination) and no run retry follows.",
)
def upload_run_failure(context: dg.RunFailureSensorContext, uploads: UploadsResource) -> None:
    run = context.dagster_run
    upload_ids = uploads_of(run)
    if not upload_ids:
        return
    reason = context.failure_event.message or "the scoring run failed"
    if retry_follows(context.instance, run.run_id):
        if retry_created(context.instance, run.run_id):
            # The uploads stay `running` (with the crashed run's progress) until the retry's run
            # takes them over (UploadStatusStore.start) and finishes them.
            context.log.info(f"run {run.run_id} of {len(upload_ids)} upload(s) failed; a run retry follows")
            return
        # Never left `running` for ever: failed, with what to do.
        reason = f"{reason} Dagster's run-retry daemon did not retry it: re-execute the run or upload again."
        context.log.warning(f"run {run.run_id} was to be retried, but no retry appeared")
    status = uploads.status_store()
    for upload_id in upload_ids:
        # Only uploads still running in this run: in a backlog, the others succeeded or failed on their own.
        if status.fail(upload_id, f"scoring run {run.run_id} failed: {reason}", run_id=run.run_id):
            context.log.info(f"marked upload {upload_id} failed (run {run.run_id})")


def retry_follows(instance: dg.DagsterInstance, run_id: str, settle_timeout_s: float = RUN_STATUS_SETTLE_S) -> bool:
    """Whether Dagster's run-retry daemon retries this failed run: the decision it acts on.

    Not the run the sensor was handed: the process that reports a run failure stores the failure
    event first, then sets the run's status, then computes ``dagster/will_retry`` and tags the run
    (``DagsterInstance.handle_new_event``). A sensor tick that reads the run in between sees no
    tag; on a busy machine the reporting process can be descheduled right there, and reading "no
    tag" as "no retry" marked uploads failed that their retry then scored (issue 17). So the run is
    read afresh until its status is FAILURE; then its tag decides, or, when not written yet, the
    retry daemon's own function (``should_retry``, a Dagster internal: aimq_pipelines.dagster_internals) computes
    it from the same inputs and writes it, so the daemon and this sensor act on one decision.
    """
    if not instance.run_retries_enabled:
        return False
    run = _failed_run(instance, run_id, settle_timeout_s)
    if run is None:
        return False
    if WILL_RETRY_TAG in run.tags:  # decided already (should_retry would log its reason a second time)
        return run.tags[WILL_RETRY_TAG] == "true"
    return dagster_internals.SHOULD_RETRY.load()(run, instance)


def retry_created(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether the retry daemon created the retry of this failed run (its ``dagster/auto_retry_run_id``
    tag), and if it did not within ``wait_s``, make it read the failure again.

    The daemon has the same race as ``retry_follows``: it reads the run as soon as it sees the failure
    event, and a run whose status is not FAILURE yet is "not to be retried" to it; its cursor moves on
    and the run is never retried (seen under contention: the upload stayed `running`). Rewinding its
    cursor to just before that event makes its next pass read the run again, now failed and tagged; a
    run it already retried is not retried twice (its own contract)."""
    wait_s = RETRY_APPEAR_S
    deadline = time.monotonic() + wait_s
    rewinds = 0
    while True:
        run = instance.get_run_by_id(run_id)
        if run is not None and AUTO_RETRY_RUN_ID_TAG in run.tags:
            return True
        if time.monotonic() >= deadline:
            if rewinds == REWINDS:
                return False
            rewinds += 1
            _rewind_retry_daemon(instance, run_id)
            deadline = time.monotonic() + wait_s
        time.sleep(0.2)


def _rewind_retry_daemon(instance: dg.DagsterInstance, run_id: str) -> None:
    """Set the retry daemon's cursor of run failures to just before this run's failure event."""
    key = dagster_internals.RETRY_CURSOR_KEY.load()(dg.DagsterEventType.RUN_FAILURE)
    current = instance.daemon_cursor_storage.get_cursor_values({key}).get(key)
    if current is None:  # the daemon has not started reading: it will see the event
        return
    events = instance.event_log_storage.get_logs_for_all_runs_by_log_id(
        after_cursor=max(-1, int(current) - REWIND_SCAN),
        dagster_event_type={dg.DagsterEventType.RUN_FAILURE},
        limit=REWIND_SCAN,
    )
    ids = [storage_id for storage_id, event in events.items() if event.run_id == run_id]
    if ids and min(ids) - 1 < int(current):
        log.warning("run %s: rewinding Dagster's retry daemon to its failure event", run_id)
        instance.daemon_cursor_storage.set_cursor_values({key: str(min(ids) - 1)})


def _failed_run(instance: dg.DagsterInstance, run_id: str, timeout_s: float) -> dg.DagsterRun | None:
    """The run once its status says FAILURE (it may lag its failure event), else None."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = instance.get_run_by_id(run_id)
        if run is None or run.status == dg.DagsterRunStatus.FAILURE:
            return run
        if time.monotonic() >= deadline:
            log.warning("run %s has a failure event but its status is still %s", run_id, run.status)
            return None
        time.sleep(0.2)
