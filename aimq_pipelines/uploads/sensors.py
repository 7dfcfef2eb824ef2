"""The upload sensor: queued uploads become scoring runs (failed runs: ``run_failures.py``).

How ``upload_sensor`` acknowledges messages, so that killing the daemon (or the code server that
evaluates the sensor) at any moment neither loses an upload nor scores one twice:

Dagster creates and submits a tick's runs only after the sensor function returned. Acknowledging a
message inside the function would therefore lose the upload if the daemon died between the return
and the submission. So a tick:

1. takes up to ``sensor_batch_size`` messages with ``basic_get``, within ``sensor_tick_budget_s``,
   and does NOT acknowledge them. On an empty queue it waits (up to ``sensor_wait_s``, less when
   the daemon's rhythm says so: ``tick_pacing.py``; polling) for the first upload, and once it has
   one it goes on while more keep coming (``sensor_linger_s``): the daemon starts a tick every 5 s
   at most, so waiting inside the tick is what makes an upload's run start within a fraction of a
   second, and a burst one tick's runs;
2. for a message whose upload already has a run of this sensor (looked up in the instance by the
   run's ``aimq/upload.<id>`` tag) that has left NOT_STARTED: acknowledges it: the run exists, the
   message is done;
3. for the other messages: one new upload alone yields ``RunRequest(run_key=upload_id)`` for
   ``score_upload``; several (a burst, a backlog) are split by ``plan_runs`` into ``score_uploads``
   runs, each keyed by a hash of its upload ids (a run process start costs far more than scoring a
   small file: docs/batch.md, "Many small files");
4. keeps its connection open when it requested runs (``held_connections.py``): the requested messages
   stay out of sight until this sensor's next tick, which Dagster starts only once the runs were
   submitted; closing the connection then returns every unacknowledged message to the queue.

The next tick gets the requested messages again, finds their runs (step 2) and acknowledges them.

Several sensors (``sensor_shards``: ``upload_sensor``, ``upload_sensor_2`` ...) read the one queue, each
with its own ticks and cursor: the daemon runs one tick at a time per sensor, so while one sensor's
tick returns to have its upload's run created, the others' are still open and take the next upload at
once (docs/batch.md, "Many small files"). Dagster de-duplicates run keys per sensor only, so a sensor
never requests an upload another one already has: it looks for the upload's runs of every upload
sensor, and, for a message delivered before (``redelivered``: only such a message can have been taken
by another sensor), for the requests other sensors' ticks returned and the daemon has not submitted
yet (``dagster_internals.pending_sensor_requests``). Such a message is left unacknowledged for the
sensor that has it on the way. A run created but never launched is requested again only by the
sensor that requested it (its run key is that sensor's).

Failure cases:

- killed before the runs are submitted: the messages are back in the queue (the connection died
  with the process, or the next tick of the sensor closes it), no run exists, the next tick requests
  them again: nothing lost; a daemon killed after its tick wrote the requests submits them when it
  starts again (Dagster resumes the tick), and until then no other sensor requests those uploads;
- killed after the runs were submitted: the next tick finds the runs and only acknowledges;
- a message delivered twice (a redelivery, or a publisher retry after a lost confirm): the
  ``run_key`` makes Dagster skip the second request, and step 2 acknowledges it: no second run;
- a run created but never launched (NOT_STARTED, the daemon died in between): not acknowledged
  but requested again word for word (``request_again``: its job, run key, config and tags, so no
  new upload joins it), and Dagster launches the existing run for that run key;
- a backlog requested but never created (killed before submitting): its messages come back and are
  planned again, maybe grouped differently; no run existed, so none is doubled.

A message that is not valid JSON or lacks fields is copied to the dead-letter exchange with the
reason in its ``x-aimq-error`` header; the original is acknowledged only after the broker
confirmed the copy. It never blocks the queue: the next messages are taken in the same tick.

Each tick also removes abandoned incoming bodies (``incoming/<id>.part`` untouched for
``upload_abandoned_after_s``): what an API killed mid-upload leaves behind. None of them was
answered with 202. One whose message was queued is kept while the tick takes that message or its
upload has an unfinished run: the run moves it into place (``UploadStorage.claim_input``), so a
run that finds neither body nor status record ends as withdrawn.
"""

import hashlib
import logging
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import dagster as dg
import pika
import pika.exceptions

from aimq_pipelines import dagster_internals
from aimq_pipelines.uploads import held_connections
from aimq_pipelines.uploads.jobs import (
    SCORING_JOBS,
    UPLOAD_TAG_PREFIX,
    backlog_run_config,
    backlog_run_tags,
    run_config,
    run_tags,
    runs_of_upload,
    score_upload_job,
    score_uploads_job,
    uploads_of,
)
from aimq_pipelines.uploads.resources import UploadsResource
from aimq_pipelines.uploads.tick_pacing import TickPacing
from aimq_serving.settings import get_settings
from aimq_serving.uploads.broker import Topology, dead_letter
from aimq_serving.uploads.messages import InvalidMessage, UploadMessage
from aimq_serving.uploads.status import StatusUnavailable, UploadStatusStore

log = logging.getLogger(__name__)

UPLOAD_SENSOR = "upload_sensor"
# The other shards: upload_sensor_2, upload_sensor_3 ... (any number: runs of shards since removed count).
_SHARD_NAME = re.compile(rf"{UPLOAD_SENSOR}(_[0-9]+)?")


def shard_names(shards: int) -> tuple[str, ...]:
    """The names of ``shards`` upload sensors; the first keeps the name of the single sensor before."""
    return (UPLOAD_SENSOR, *(f"{UPLOAD_SENSOR}_{i}" for i in range(2, shards + 1)))


def is_upload_sensor(name: str | None) -> bool:
    return bool(name) and _SHARD_NAME.fullmatch(name) is not None


# Dagster's own tags on runs a sensor requested (dagster._core.storage.tags): how it de-duplicates.
RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"


@dataclass
class TickOutcome:
    run_requests: list[dg.RunRequest] = field(default_factory=list)
    # New uploads this tick requests runs for (run_requests holds their runs, and the reissued ones).
    new_uploads: list[UploadMessage] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)
    swept: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.run_requests)} run(s) requested for {len(self.new_uploads)} new upload(s), "
            f"{len(self.acknowledged)} message(s) acknowledged "
            f"(their runs exist), {len(self.dead_lettered)} invalid message(s) dead-lettered, "
            f"{len(self.swept)} abandoned incoming upload(s) removed"
        )


def runs_of(instance: dg.DagsterInstance, upload_id: str) -> list[dg.DagsterRun]:
    """The runs the upload sensors requested for ``upload_id``, alone or in a backlog (its upload tag),
    or by the run key alone (runs requested before scoring runs carried upload tags). Not a rerun a
    person started from the UI (it has no sensor tag)."""
    runs = runs_of_upload(instance, upload_id) or list(
        instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: upload_id}))
    )
    return [r for r in runs if is_upload_sensor(r.tags.get(SENSOR_NAME_TAG))]


def existing_run(instance: dg.DagsterInstance, upload_id: str) -> dg.DagsterRun | None:
    """The run an upload sensor requested for ``upload_id`` that has been launched (or queued), if any."""
    launched = [r for r in runs_of(instance, upload_id) if r.status != dg.DagsterRunStatus.NOT_STARTED]
    return launched[0] if launched else None


def unlaunched_run(instance: dg.DagsterInstance, upload_id: str) -> dg.DagsterRun | None:
    """A run created for ``upload_id`` that the daemon never launched (it died in between)."""
    waiting = [r for r in runs_of(instance, upload_id) if r.status == dg.DagsterRunStatus.NOT_STARTED]
    return waiting[0] if waiting else None


def pending_uploads(instance: dg.DagsterInstance) -> set[str]:
    """Uploads whose runs upload sensors' ticks requested and the daemon has yet to submit."""
    names = frozenset(shard_names(get_settings().sensor_shards))
    requests = dagster_internals.pending_sensor_requests(instance, names)
    return {upload_id for request in requests for upload_id in _uploads_requested(request)}


def _uploads_requested(request: dg.RunRequest) -> list[str]:
    return [v for k, v in request.tags.items() if k.startswith(UPLOAD_TAG_PREFIX)] or (
        [request.run_key] if request.run_key and not request.run_key.startswith("uploads-") else []
    )


def request_again(run: dg.DagsterRun) -> dg.RunRequest:
    """The request that created ``run``, word for word: Dagster finds the NOT_STARTED run by its run
    key and launches it, so its uploads are not put in a second run."""
    tags = {k: v for k, v in run.tags.items() if not k.startswith("dagster/")}
    return dg.RunRequest(run_key=run.tags[RUN_KEY_TAG], job_name=run.job_name, run_config=run.run_config, tags=tags)


def plan_runs(messages: Sequence[UploadMessage], uploads_per_run: int, parallel_runs: int) -> list[dg.RunRequest]:
    """Runs for the new uploads of one tick. One upload: a ``score_upload`` run of its own, keyed by
    its id. Several (a burst, a backlog): split into backlog runs (``score_uploads``), at most
    ``uploads_per_run`` each and at least ``parallel_runs`` (the free run slots), so every slot
    works; a backlog run's key is derived from its uploads."""
    if not messages:
        return []
    count = min(len(messages), max(math.ceil(len(messages) / uploads_per_run), parallel_runs))
    groups = [list(messages[i::count]) for i in range(count)]
    requests = []
    for group in groups:
        if len(group) == 1:
            (message,) = group
            requests.append(
                dg.RunRequest(
                    run_key=message.upload_id,
                    job_name=score_upload_job.name,
                    run_config=run_config(message),
                    tags=run_tags(message),
                )
            )
        else:
            key = "uploads-" + hashlib.sha256(",".join(sorted(m.upload_id for m in group)).encode()).hexdigest()[:32]
            requests.append(
                dg.RunRequest(
                    run_key=key,
                    job_name=score_uploads_job.name,
                    run_config=backlog_run_config(group),
                    tags=backlog_run_tags(group),
                )
            )
    return requests


def parallel_runs(instance: dg.DagsterInstance) -> int:
    """How many runs the instance runs at once (its run queue's limit), 1 without a queue."""
    coordinator = instance.run_coordinator
    if not isinstance(coordinator, dg.QueuedRunCoordinator):
        return 1
    limit = coordinator.get_run_queue_config().max_concurrent_runs
    return limit if limit > 0 else sys.maxsize  # unlimited: every upload its own run


# Runs that hold or wait for a slot of the run queue (not NOT_STARTED: one a dead daemon left
# behind never takes a slot until it is requested again).
_BUSY = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def free_run_slots(instance: dg.DagsterInstance) -> int:
    """Run slots no run holds or waits for (at least 1). A burst taken by several ticks in turn (the
    upload sensors) is split to fill the slots that are free, not into ``parallel_runs`` runs per
    tick: every run is a process start, and on a busy machine more runs than slots only queue."""
    limit = parallel_runs(instance)
    if limit == sys.maxsize:
        return limit
    return max(1, limit - instance.get_runs_count(dg.RunsFilter(statuses=_BUSY)))


# How often a waiting tick asks the broker again (a basic_get round trip on localhost is ~1 ms).
POLL_INTERVAL_S = 0.05


@dataclass
class TickClock:
    """When a tick stops taking messages: on an empty queue after ``wait_s`` while it has nothing
    to request, or once it has requests and the queue stayed empty for ``linger_s``; in any case
    at the budget."""

    wait_s: float
    linger_s: float
    budget_s: float
    started: float = field(default_factory=time.monotonic)
    last_request: float | None = None

    def requested(self) -> None:
        self.last_request = time.monotonic()

    def out_of_budget(self) -> bool:
        return time.monotonic() >= self.started + self.budget_s

    def wait_left(self) -> float:
        """How long the tick may still wait for a first upload."""
        return self.started + self.wait_s - time.monotonic()

    def keep_waiting(self) -> bool:
        """Called on an empty queue: whether to ask again after ``POLL_INTERVAL_S``."""
        now = time.monotonic()
        if now >= self.started + self.budget_s:
            return False
        if self.last_request is None:
            return now < self.started + self.wait_s
        return now < self.last_request + self.linger_s


def poll_uploads(
    instance: dg.DagsterInstance,
    uploads: UploadsResource,
    sensor_name: str = UPLOAD_SENSOR,
    wait_s: float | None = None,
) -> TickOutcome:
    """One tick's work (see the module docstring); never acknowledges a message without a run.
    ``wait_s``: how long to wait on an empty queue (default ``sensor_wait_s``; ``tick_pacing``)."""
    with held_connections.sensor_tick(sensor_name):
        return _poll(instance, uploads, sensor_name, wait_s)


def _poll(
    instance: dg.DagsterInstance, uploads: UploadsResource, sensor_name: str, wait_s: float | None
) -> TickOutcome:
    settings = uploads.settings()
    wait = settings.sensor_wait_s if wait_s is None else wait_s
    clock = TickClock(wait, settings.sensor_linger_s, settings.sensor_tick_budget_s)
    outcome = TickOutcome()
    taker: _Taker | None = None
    try:
        with held_connections.taking_turn(clock.wait_left()) as turn:
            if turn:
                taker = _take(instance, uploads, sensor_name, clock, outcome)
    finally:
        # The first upload sensor sweeps abandoned bodies (a broker outage must not keep them
        # around); the others would repeat the same scan.
        if sensor_name == UPLOAD_SENSOR:
            _sweep(instance, uploads, outcome, taker.seen if taker else set())
    if outcome.new_uploads:
        slots = free_run_slots(instance)
        outcome.run_requests += plan_runs(outcome.new_uploads, settings.scoring_uploads_per_run, slots)
    return outcome


def _take(
    instance: dg.DagsterInstance, uploads: UploadsResource, sensor_name: str, clock: TickClock, outcome: TickOutcome
) -> "_Taker":
    """Steps 1-4 of the module docstring, on a connection of this tick."""
    settings = uploads.settings()
    topology = uploads.topology()
    connection = uploads.connect()
    held = False
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        topology.declare(channel)
        taker = _Taker(instance, channel, topology, uploads.status_store(), sensor_name, outcome)
        # Acknowledging is cheap and does not count against the batch; the bound on gets keeps a
        # queue full of already-run messages from stretching a tick.
        gets = 0
        while len(taker.requested) < settings.sensor_batch_size and gets < settings.sensor_batch_size * 4:
            if clock.out_of_budget():
                break
            method, properties, body = channel.basic_get(topology.queue, auto_ack=False)
            if method is None:
                if not clock.keep_waiting():
                    break
                connection.sleep(POLL_INTERVAL_S)  # also serves the connection's heartbeats
                continue
            gets += 1
            if taker.take(method, properties, body):
                clock.requested()
        if taker.requested:
            # Its requested messages stay out of the other sensors' sight until their runs exist.
            held_connections.keep(sensor_name, connection)
            held = True
        return taker
    finally:
        if not held:
            # Every message not acknowledged above goes back to the queue now (or when the broker
            # notices the connection is gone, if this process dies first).
            try:
                connection.close()
            except (pika.exceptions.AMQPError, OSError):
                log.debug("closing the broker connection failed; the broker requeues on its own", exc_info=True)


@dataclass
class _Taker:
    """What one tick does with each message it takes (steps 2 and 3 of the module docstring)."""

    instance: dg.DagsterInstance
    channel: "pika.adapters.blocking_connection.BlockingChannel"
    topology: Topology
    status: UploadStatusStore
    sensor_name: str
    outcome: TickOutcome
    requested: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)  # every valid upload id taken this tick
    # Uploads other sensors' ticks have requested and the daemon has yet to submit: read once per
    # tick, and only for a message delivered before.
    _pending: set[str] | None = None

    def take(self, method: "pika.spec.Basic.GetOk", properties: pika.BasicProperties, body: bytes) -> bool:
        """True if the message became a run request."""
        try:
            message = UploadMessage.parse(body)
        except InvalidMessage as exc:
            dead_letter(self.channel, self.topology, body, properties, exc.reason)
            self.channel.basic_ack(method.delivery_tag)
            self.outcome.dead_lettered.append(exc.reason)
            return False
        upload_id = message.upload_id
        self.seen.add(upload_id)
        if upload_id in self.requested:
            return False  # a duplicate in this tick: stays unacknowledged until the run exists
        run = existing_run(self.instance, upload_id)
        if run is not None:
            _attach(self.status, upload_id, run.run_id)
            self.channel.basic_ack(method.delivery_tag)
            self.outcome.acknowledged.append(upload_id)
            return False
        waiting = unlaunched_run(self.instance, upload_id)
        if waiting is not None:
            if waiting.tags.get(SENSOR_NAME_TAG) != self.sensor_name:
                return False  # only its own sensor's run key finds that run: left for that sensor
            # Every upload of that run is requested with it; their messages come back next tick.
            for claimed in uploads_of(waiting):
                held_connections.try_claim(self.sensor_name, claimed)
            self.requested.update(uploads_of(waiting))
            self.outcome.run_requests.append(request_again(waiting))
            return True
        if method.redelivered:
            if self._pending is None:
                self._pending = pending_uploads(self.instance)
            if upload_id in self._pending:
                return False  # a tick requested it; the daemon is creating its run
        if held_connections.try_claim(self.sensor_name, upload_id) is not None:
            return False  # another sensor's tick requested it (a second copy of its message)
        self.requested.add(upload_id)
        self.outcome.new_uploads.append(message)
        return True


def _sweep(instance: dg.DagsterInstance, uploads: UploadsResource, outcome: TickOutcome, seen: set[str]) -> None:
    """Remove abandoned incoming bodies, but never one whose message this tick took or whose upload
    has a run that has not finished or is being created: that run moves it into place
    (``claim_input``), however long it waited for the sensor or in Dagster's queue."""
    pending: set[str] | None = None

    def queued(upload_id: str) -> bool:
        nonlocal pending
        if upload_id in seen or any(not r.is_finished for r in runs_of(instance, upload_id)):
            return True
        if pending is None:
            pending = pending_uploads(instance)
        return upload_id in pending

    try:
        outcome.swept = uploads.storage().sweep_incoming(uploads.settings().upload_abandoned_after_s, keep=queued)
    except OSError as exc:
        log.warning("could not sweep abandoned incoming uploads: %s", exc)


def _attach(status: UploadStatusStore, upload_id: str, run_id: str) -> None:
    try:
        status.attach_run(upload_id, run_id)
    except StatusUnavailable as exc:  # only a link for the status page; the run records itself
        log.warning("could not link upload %s to run %s: %s", upload_id, run_id, exc)


def tick(context: dg.SensorEvaluationContext, uploads: UploadsResource) -> dg.SensorResult:
    """One tick of an upload sensor (every shard runs the same)."""
    name = context.sensor_name or UPLOAD_SENSOR
    pacing = TickPacing.next(context.cursor, uploads.settings().sensor_wait_s, time.time())
    outcome = poll_uploads(context.instance, uploads, name, pacing.wait_s)
    # The routine summary goes to the daemon's log; the tick shows it in the UI as its skip reason or
    # its runs. Dagster opens a log file for a tick the first time its context.log is used, and its tick
    # purge never deletes those files: one a tick (about 3 KB, some 17,000 ticks a day) grew
    # $DAGSTER_HOME/storage without end in the soak benchmark. Only a dead-lettered message, rare and
    # worth a person's eye in the UI, is logged there.
    log.info("%s: %s; waited up to %.1f s", name, outcome.summary(), pacing.wait_s)
    for reason in outcome.dead_lettered:
        context.log.warning(f"dead-lettered an invalid upload message: {reason}")
    skip = None if outcome.run_requests else dg.SkipReason(outcome.summary())
    return dg.SensorResult(run_requests=outcome.run_requests, skip_reason=skip, cursor=pacing.cursor())


def upload_sensor_named(name: str) -> dg.SensorDefinition:
    @dg.sensor(
        name=name,
        jobs=list(SCORING_JOBS),
        minimum_interval_seconds=get_settings().sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Turns each queued upload (RabbitMQ) into exactly one scoring run: score_upload for an "
        "upload alone, score_uploads for uploads waiting together (one step each). One of "
        "AIMQ_SENSOR_SHARDS sensors reading the same queue: while one has its runs created, the others "
        "take the next uploads.",
    )
    def upload_sensor(context: dg.SensorEvaluationContext, uploads: UploadsResource) -> dg.SensorResult:
        return tick(context, uploads)

    return upload_sensor


UPLOAD_SENSORS = tuple(upload_sensor_named(name) for name in shard_names(get_settings().sensor_shards))
upload_sensor = UPLOAD_SENSORS[0]
