"""Sensors of batch scoring: queued uploads become runs; runs that die leave failed uploads.

How ``upload_sensor`` acknowledges messages, so that killing the daemon (or the code server that
evaluates the sensor) at any moment neither loses an upload nor scores one twice:

Dagster creates and submits a tick's runs only after the sensor function returned. Acknowledging a
message inside the function would therefore lose the upload if the daemon died between the return
and the submission. So a tick:

1. takes up to ``sensor_batch_size`` messages with ``basic_get``, within ``sensor_tick_budget_s``,
   and does NOT acknowledge them;
2. for a message whose upload already has a run of this sensor (looked up in the instance by the
   run-key tag) that has left NOT_STARTED: acknowledges it: the run exists, the message is done;
3. for any other message: yields ``RunRequest(run_key=upload_id)``;
4. closes its connection, which returns every unacknowledged message to the queue.

The next tick gets the requested messages again, finds their runs (step 2) and acknowledges them.
Failure cases:

- killed before the runs are submitted: the messages are back in the queue (the connection died
  with the process), no run exists, the next tick requests them again: nothing lost;
- killed after the runs were submitted: the next tick finds the runs and only acknowledges;
- a message delivered twice (a redelivery, or a publisher retry after a lost confirm): the
  ``run_key`` makes Dagster skip the second request, and step 2 acknowledges it: no second run;
- a run created but never launched (NOT_STARTED, the daemon died in between): not acknowledged
  but requested again, and Dagster launches the existing run for that run key.

A message that is not valid JSON or lacks fields is copied to the dead-letter exchange with the
reason in its ``x-aimq-error`` header; the original is acknowledged only after the broker
confirmed the copy. It never blocks the queue: the next messages are taken in the same tick.

Each tick also removes abandoned incoming bodies (``incoming/<id>.part`` untouched for
``upload_abandoned_after_s``): what an API killed mid-upload leaves behind. None of them was
answered with 202; one whose message was queued meanwhile would have been moved into place by
its run (``UploadStorage.claim_input``), so a run that finds neither ends as withdrawn.
"""

import logging
import time
from dataclasses import dataclass, field

import dagster as dg
import pika
import pika.exceptions

from aimq_pipelines.scoring.job import UPLOAD_ID_TAG, run_config, run_tags, score_upload_job
from aimq_pipelines.scoring.resources import UploadsResource
from aimq_serving.settings import get_settings
from aimq_serving.uploads.broker import dead_letter
from aimq_serving.uploads.messages import InvalidMessage, UploadMessage
from aimq_serving.uploads.status import StatusUnavailable, UploadStatusStore

log = logging.getLogger(__name__)

UPLOAD_SENSOR = "upload_sensor"
# Dagster's own tags on runs a sensor requested (dagster._core.storage.tags): how it de-duplicates.
RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"
WILL_RETRY_TAG = "dagster/will_retry"
# How long the run-failure sensor waits for a failed run's status to catch up with its failure
# event (two consecutive writes of the reporting process; see retry_follows). Generous against a
# process descheduled on a busy machine, and well inside Dagster's sensor evaluation timeout (60 s).
RUN_STATUS_SETTLE_S = 20.0


@dataclass
class TickOutcome:
    run_requests: list[dg.RunRequest] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)
    swept: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.run_requests)} run(s) requested, {len(self.acknowledged)} message(s) acknowledged "
            f"(their runs exist), {len(self.dead_lettered)} invalid message(s) dead-lettered, "
            f"{len(self.swept)} abandoned incoming upload(s) removed"
        )


def existing_run(instance: dg.DagsterInstance, upload_id: str, sensor_name: str = UPLOAD_SENSOR) -> dg.DagsterRun | None:
    """The run this sensor requested for ``upload_id`` that has been launched (or queued), if any."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: upload_id, SENSOR_NAME_TAG: sensor_name}))
    launched = [r for r in runs if r.status != dg.DagsterRunStatus.NOT_STARTED]
    return launched[0] if launched else None


def poll_uploads(instance: dg.DagsterInstance, uploads: UploadsResource, sensor_name: str = UPLOAD_SENSOR) -> TickOutcome:
    """One tick's work (see the module docstring); never acknowledges a message without a run."""
    settings = uploads.settings()
    topology = uploads.topology()
    status = uploads.status_store()
    deadline = time.monotonic() + settings.sensor_tick_budget_s
    outcome = TickOutcome()
    try:  # before the broker: a broker outage must not keep abandoned bodies around
        outcome.swept = uploads.storage().sweep_incoming(settings.upload_abandoned_after_s)
    except OSError as exc:
        log.warning("could not sweep abandoned incoming uploads: %s", exc)
    requested: set[str] = set()
    connection = uploads.connect()
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        topology.declare(channel)
        # Acknowledging is cheap and does not count against the batch; the bound on gets keeps a
        # queue full of already-run messages from stretching a tick.
        for _ in range(settings.sensor_batch_size * 4):
            if len(outcome.run_requests) >= settings.sensor_batch_size or time.monotonic() >= deadline:
                break
            method, properties, body = channel.basic_get(topology.queue, auto_ack=False)
            if method is None:
                break
            try:
                message = UploadMessage.parse(body)
            except InvalidMessage as exc:
                dead_letter(channel, topology, body, properties, exc.reason)
                channel.basic_ack(method.delivery_tag)
                outcome.dead_lettered.append(exc.reason)
                continue
            upload_id = message.upload_id
            if upload_id in requested:
                continue  # a duplicate in this tick: stays unacknowledged until the run exists
            run = existing_run(instance, upload_id, sensor_name)
            if run is not None:
                _attach(status, upload_id, run.run_id)
                channel.basic_ack(method.delivery_tag)
                outcome.acknowledged.append(upload_id)
                continue
            requested.add(upload_id)
            outcome.run_requests.append(
                dg.RunRequest(run_key=upload_id, run_config=run_config(message), tags=run_tags(message))
            )
    finally:
        # Every message not acknowledged above goes back to the queue now (or when the broker
        # notices the connection is gone, if this process dies first).
        try:
            connection.close()
        except (pika.exceptions.AMQPError, OSError):
            log.debug("closing the broker connection failed; the broker requeues on its own", exc_info=True)
    return outcome


def _attach(status: UploadStatusStore, upload_id: str, run_id: str) -> None:
    try:
        status.attach_run(upload_id, run_id)
    except StatusUnavailable as exc:  # only a link for the status page; the run records itself
        log.warning("could not link upload %s to run %s: %s", upload_id, run_id, exc)


@dg.sensor(
    name=UPLOAD_SENSOR,
    job=score_upload_job,
    minimum_interval_seconds=get_settings().sensor_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Turns each queued upload (RabbitMQ) into exactly one score_upload run.",
)
def upload_sensor(context: dg.SensorEvaluationContext, uploads: UploadsResource) -> dg.SensorResult:
    outcome = poll_uploads(context.instance, uploads, context.sensor_name or UPLOAD_SENSOR)
    context.log.info(outcome.summary())
    for reason in outcome.dead_lettered:
        context.log.warning(f"dead-lettered an invalid upload message: {reason}")
    skip = None if outcome.run_requests else dg.SkipReason(outcome.summary())
    return dg.SensorResult(run_requests=outcome.run_requests, skip_reason=skip)


def upload_of(run: dg.DagsterRun) -> str | None:
    """The upload a scoring run works on (UI re-executions keep the run config, maybe not the tags)."""
    if UPLOAD_ID_TAG in run.tags:
        return run.tags[UPLOAD_ID_TAG]
    config = (run.run_config or {}).get("ops", {}).get("score_file", {}).get("config", {})
    return config.get("upload_id")


@dg.run_failure_sensor(
    name="upload_run_failure",
    monitored_jobs=[score_upload_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=get_settings().sensor_interval_s,
    description="Marks an upload failed when its scoring run died without doing so (crash, "
    "termination) and no run retry follows.",
)
def upload_run_failure(context: dg.RunFailureSensorContext, uploads: UploadsResource) -> None:
    run = context.dagster_run
    upload_id = upload_of(run)
    if upload_id is None:
        return
    if retry_follows(context.instance, run.run_id):
        # The upload stays `running` (with the crashed run's progress) until the retry's run
        # takes it over (UploadStatusStore.start) and finishes it.
        context.log.info(f"run {run.run_id} of upload {upload_id} failed; a run retry follows")
        return
    reason = context.failure_event.message or "the scoring run failed"
    marked = uploads.status_store().fail(upload_id, f"scoring run {run.run_id} failed: {reason}", run_id=run.run_id)
    if marked:
        context.log.info(f"marked upload {upload_id} failed (run {run.run_id})")


def retry_follows(instance: dg.DagsterInstance, run_id: str, settle_timeout_s: float = RUN_STATUS_SETTLE_S) -> bool:
    """Whether Dagster's run-retry daemon retries this failed run: the decision it acts on.

    Not the run the sensor was handed: the process that reports a run failure stores the failure
    event first, then sets the run's status, then computes ``dagster/will_retry`` and tags the run
    (``DagsterInstance.handle_new_event``). A sensor tick that reads the run in between sees no
    tag; on a busy machine the reporting process can be descheduled right there, and reading "no
    tag" as "no retry" marked uploads failed that their retry then scored (issue 17). So the run is
    read afresh until its status is FAILURE; then its tag decides, or, when not written yet, the
    retry daemon's own function (``should_retry``, internal to the pinned dagster version) computes
    it from the same inputs and writes it, so the daemon and this sensor act on one decision.
    """
    from dagster._daemon.auto_run_reexecution.auto_run_reexecution import should_retry

    if not instance.run_retries_enabled:
        return False
    run = _failed_run(instance, run_id, settle_timeout_s)
    if run is None:
        return False
    if WILL_RETRY_TAG in run.tags:  # decided already (should_retry would log its reason a second time)
        return run.tags[WILL_RETRY_TAG] == "true"
    return should_retry(run, instance)


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
