"""The upload sensor's acknowledgement protocol and the run-failure sensor, against the real
RabbitMQ, Redis and a Dagster instance (each test with queue names of its own)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pika
import pytest
from dagster._daemon.auto_run_reexecution.event_log_consumer import _create_cursor_key

from aimq_pipelines.models.resources import ModelStoreResource
from aimq_pipelines.uploads import held_connections, run_failures
from aimq_pipelines.uploads.jobs import (
    UPLOAD_ID_TAG,
    run_config,
    score_upload_job,
    score_uploads_job,
    upload_tag,
    uploads_of,
)
from aimq_pipelines.uploads.resources import UploadsResource
from aimq_pipelines.uploads.run_failures import AUTO_RETRY_RUN_ID_TAG, WILL_RETRY_TAG, retry_follows, upload_run_failure
from aimq_pipelines.uploads.sensors import RUN_KEY_TAG, SENSOR_NAME_TAG, UPLOAD_SENSOR, upload_sensor
from aimq_pipelines.uploads.tick_pacing import BACK_OFF_S, TickPacing
from aimq_serving.settings import AimqSettings
from aimq_serving.uploads.broker import ERROR_HEADER, Topology, UploadPublisher, connect
from aimq_serving.uploads.messages import UploadMessage
from aimq_serving.uploads.status import UploadStatusStore
from aimq_serving.uploads.storage import UploadStorage, new_upload_id
from tests.helpers.local_home import seed_local_home
from tests.helpers.paths import SAMPLES


@pytest.fixture(scope="module")
def daemonless_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dg.DagsterInstance]:
    """The shipped instance settings (run retries on) in a home no daemon reads. The session's
    instance is shared with the end-to-end platform's dagster-daemon, whose real run-retry daemon
    would move its cursor and retry runs between a run-failure test's steps (seen: a rewound cursor
    read again and set forward)."""
    home = seed_local_home(tmp_path_factory.mktemp("daemonless_dagster_home"))
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


def message() -> UploadMessage:
    upload_id = new_upload_id()
    return UploadMessage(
        upload_id=upload_id,
        format="xlsx",
        sha256="c" * 64,
        size=5,
        original_name="cars.xlsx",
        created_at=datetime.now(UTC),
    )


class Broker:
    """Publishes like the API, publishes raw bodies like a stranger, and counts queues."""

    def __init__(self, settings: AimqSettings):
        self.settings = settings
        self.topology = Topology.from_settings(settings)
        self.publisher = UploadPublisher.from_settings(settings)
        self.connection = connect(settings.rabbitmq_url.get_secret_value())
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.topology.declare(self.channel)

    def publish_raw(self, body: bytes) -> None:
        self.channel.basic_publish(
            self.topology.exchange, self.topology.queue, body, properties=pika.BasicProperties(delivery_mode=2)
        )

    def count(self, queue: str) -> int:
        return self.channel.queue_declare(queue, passive=True).method.message_count

    def ready(self) -> int:
        # A closed consumer channel's messages come back asynchronously: wait a moment for them.
        for _ in range(40):
            count = self.count(self.topology.queue)
            if count:
                return count
            time.sleep(0.05)
        return 0

    def close(self) -> None:
        self.publisher.close()
        self.connection.close()


@pytest.fixture
def broker(uploads_settings: AimqSettings) -> Iterator[Broker]:
    b = Broker(uploads_settings)
    yield b
    b.close()


def resource(settings: AimqSettings, **overrides: object) -> UploadsResource:
    # No waiting on an empty queue unless a test is about it: each tick here returns at once.
    overrides.setdefault("sensor_wait_s", 0.0)
    # One run per upload unless a test is about backlog runs: the protocol is the same for both.
    overrides.setdefault("scoring_uploads_per_run", 1)
    return UploadsResource(
        uploads_exchange=settings.uploads_exchange,
        uploads_queue=settings.uploads_queue,
        uploads_dead_letter_exchange=settings.uploads_dead_letter_exchange,
        uploads_dead_letter_queue=settings.uploads_dead_letter_queue,
        upload_dir=str(settings.resolved_upload_dir),
        **overrides,
    )


@pytest.fixture(autouse=True)
def _let_go_of_held_connections() -> Iterator[None]:
    yield
    held_connections.release_all()


def redeliver(broker: Broker, sensor_name: str = UPLOAD_SENSOR) -> int:
    """What the sensor's next tick does first: let go of the messages its last tick held (they come
    back to the queue); how many are ready then."""
    held_connections.release(sensor_name)
    return broker.ready()


def tick(instance: dg.DagsterInstance, uploads: UploadsResource) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, sensor_name=UPLOAD_SENSOR, resources={"uploads": uploads})
    return upload_sensor(context)


def sensor_run(instance: dg.DagsterInstance, msg: UploadMessage, *, launched: bool) -> dg.DagsterRun:
    """The run the daemon would create for this sensor's request (with Dagster's own tags)."""
    run = instance.create_run_for_job(
        score_upload_job,
        run_config=run_config(msg).to_config_dict(),
        tags={RUN_KEY_TAG: msg.upload_id, SENSOR_NAME_TAG: UPLOAD_SENSOR, UPLOAD_ID_TAG: msg.upload_id},
    )
    if launched:
        instance.report_run_canceled(run)  # any state past NOT_STARTED means "launched"
    return run


@pytest.mark.usefixtures("trained_store")
def test_a_message_of_an_earlier_api_with_stored_path_is_scored(
    broker: Broker, uploads_settings: AimqSettings, settings: AimqSettings, instance: dg.DagsterInstance
) -> None:
    """Version-1 messages published before stored_path was dropped may still be queued after a deploy."""
    storage = UploadStorage(uploads_settings.resolved_upload_dir)
    upload_id = new_upload_id()
    target = storage.input_path(upload_id, "xlsx")
    target.parent.mkdir(parents=True)
    shutil.copyfile(SAMPLES / "1_row.xlsx", target)
    body = {
        "version": 1,
        "upload_id": upload_id,
        "stored_path": f"{upload_id[:2]}/{upload_id}/input.xlsx",
        "format": "xlsx",
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "size": target.stat().st_size,
        "original_name": "cars.xlsx",
        "created_at": "2026-11-28T15:37:20.123456Z",
    }
    broker.publish_raw(json.dumps(body).encode())
    uploads = resource(uploads_settings)
    [request] = tick(instance, uploads).run_requests
    assert broker.count(broker.topology.dead_letter_queue) == 0
    assert "stored_path" not in request.run_config["ops"]["score_file"]["config"]
    result = score_upload_job.execute_in_process(
        run_config=request.run_config,
        tags=request.tags,
        instance=instance,
        resources={"uploads": uploads, "model_store": ModelStoreResource()},
    )
    assert result.success
    record = UploadStatusStore.from_settings(settings).get(upload_id)
    assert record is not None and record.state == "succeeded" and record.rows_total == 1


def test_requests_runs_without_acknowledging_and_dead_letters_invalid(
    broker: Broker, uploads_settings: AimqSettings, instance: dg.DagsterInstance
) -> None:
    good = [message() for _ in range(3)]
    broker.publish_raw(b"{this is not json")
    for msg in good[:2]:
        broker.publisher.publish(msg)
    broker.publish_raw(json.dumps({"upload_id": new_upload_id()}).encode())
    broker.publisher.publish(good[2])
    uploads = resource(uploads_settings)

    first = tick(instance, uploads)
    assert [r.run_key for r in first.run_requests] == [m.upload_id for m in good]
    request = first.run_requests[0]
    assert request.tags[UPLOAD_ID_TAG] == good[0].upload_id
    assert request.run_config["ops"]["score_file"]["config"]["sha256"] == good[0].sha256
    # Not acknowledged, and held out of sight until the sensor's next tick (its runs are being
    # created): then all three are back in the queue. The invalid two are dead-lettered.
    assert broker.count(broker.topology.queue) == 0
    assert redeliver(broker) == 3
    assert broker.count(broker.topology.dead_letter_queue) == 2
    reasons = []
    for _ in range(2):
        _, props, _ = broker.channel.basic_get(broker.topology.dead_letter_queue, auto_ack=True)
        reasons.append(props.headers[ERROR_HEADER])
    assert any("not valid JSON" in r for r in reasons)
    assert any("sha256: Field required" in r for r in reasons)

    # The daemon died before submitting: nothing exists, the next tick asks again.
    again = tick(instance, uploads)
    assert [r.run_key for r in again.run_requests] == [m.upload_id for m in good]
    assert redeliver(broker) == 3


def test_messages_are_acknowledged_once_their_run_exists(
    broker: Broker, uploads_settings: AimqSettings, instance: dg.DagsterInstance, settings: AimqSettings
) -> None:
    launched, created, fresh = message(), message(), message()
    status = UploadStatusStore.from_settings(settings)
    for msg in (launched, created, fresh):
        broker.publisher.publish(msg)
        status.register(msg)
    run = sensor_run(instance, launched, launched=True)
    sensor_run(instance, created, launched=False)  # created, never launched: the daemon died

    outcome = tick(instance, resource(uploads_settings))
    # Re-requested: Dagster launches the existing NOT_STARTED run for that key.
    assert sorted(r.run_key for r in outcome.run_requests) == sorted([created.upload_id, fresh.upload_id])
    assert redeliver(broker) == 2  # the launched one is acknowledged, gone for good
    assert status.get(launched.upload_id).run_id == run.run_id  # linked while waiting in Dagster
    assert status.get(fresh.upload_id).run_id is None


def test_batch_bound_and_duplicates(
    broker: Broker, uploads_settings: AimqSettings, instance: dg.DagsterInstance
) -> None:
    msgs = [message() for _ in range(4)]
    broker.publisher.publish(msgs[0])
    broker.publisher.publish(msgs[0])  # a publisher retry after a lost confirm
    for msg in msgs[1:]:
        broker.publisher.publish(msg)
    outcome = tick(instance, resource(uploads_settings, sensor_batch_size=2))
    assert [r.run_key for r in outcome.run_requests] == [msgs[0].upload_id, msgs[1].upload_id]
    assert redeliver(broker) == 5  # nothing acknowledged

    for msg in msgs[:2]:
        sensor_run(instance, msg, launched=True)
    outcome = tick(instance, resource(uploads_settings, sensor_batch_size=2))
    # Both copies of the first and the second are acknowledged; the next two are requested.
    assert [r.run_key for r in outcome.run_requests] == [msgs[2].upload_id, msgs[3].upload_id]
    assert redeliver(broker) == 2


def test_empty_queue_skips_with_a_reason(broker: Broker, uploads_settings: AimqSettings, instance) -> None:
    outcome = tick(instance, resource(uploads_settings))
    assert outcome.run_requests == [] and "0 run(s) requested" in outcome.skip_reason.skip_message


def test_a_tick_removes_abandoned_incoming_bodies(broker: Broker, uploads_settings: AimqSettings, instance) -> None:
    storage = UploadStorage(uploads_settings.resolved_upload_dir)
    idle, live = new_upload_id(), new_upload_id()
    for upload_id in (idle, live):
        storage.incoming_path(upload_id).write_bytes(b"model_group,model\n")
    long_ago = time.time() - uploads_settings.upload_abandoned_after_s - 60
    os.utime(storage.incoming_path(idle), (long_ago, long_ago))
    outcome = tick(instance, resource(uploads_settings))
    assert not storage.incoming_path(idle).exists()
    assert storage.incoming_path(live).exists()  # still being received, or waiting for its confirm
    assert "1 abandoned incoming upload(s) removed" in outcome.skip_reason.skip_message


@pytest.mark.parametrize("will_retry", [False, True])
def test_run_failure_sensor_marks_the_upload_unless_a_retry_follows(
    instance: dg.DagsterInstance, settings: AimqSettings, uploads_settings: AimqSettings, will_retry: bool
) -> None:
    msg = message()
    status = UploadStatusStore.from_settings(settings)
    status.register(msg)
    # A run that died without recording anything (its file does not even exist).
    result = score_upload_job.execute_in_process(
        run_config=run_config(msg),
        tags={UPLOAD_ID_TAG: msg.upload_id},
        instance=instance,
        resources={"uploads": resource(uploads_settings), "model_store": dg.ResourceDefinition.none_resource()},
        raise_on_error=False,
    )
    assert not result.success
    status.start(msg, result.run_id)  # as if it crashed right after starting
    instance.add_run_tags(result.run_id, {WILL_RETRY_TAG: str(will_retry).lower()})
    if will_retry:
        retried_by_the_daemon(instance, result.run_id)
    context = dg.build_run_status_sensor_context(
        sensor_name="upload_run_failure",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"uploads": resource(uploads_settings)},
    )
    upload_run_failure(context)
    record = status.get(msg.upload_id)
    if will_retry:
        assert record.state == "running"
    else:
        assert record.state == "failed" and f"scoring run {result.run_id} failed" in record.error


def retried_by_the_daemon(instance: dg.DagsterInstance, run_id: str) -> None:
    """What Dagster's retry daemon (not running here) writes once it created the retry."""
    instance.add_run_tags(run_id, {AUTO_RETRY_RUN_ID_TAG: "the-retry"})


def crashed_run_context(
    instance: dg.DagsterInstance, uploads_settings: AimqSettings, msg: UploadMessage, run: dg.DagsterRun
) -> dg.RunFailureSensorContext:
    """The sensor's context for a crash reported "from outside" (Dagster's code server or run
    monitoring), handed ``run`` as the sensor read it."""
    failure = dg.DagsterEvent(
        event_type_value=dg.DagsterEventType.RUN_FAILURE.value,
        job_name=run.job_name,
        message="This run has been marked as failed from outside the execution context.",
    )
    return dg.build_run_status_sensor_context(
        sensor_name="upload_run_failure",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=run,
        resources={"uploads": resource(uploads_settings)},
    ).for_run_failure()


def started_upload_run(
    instance: dg.DagsterInstance, settings: AimqSettings
) -> tuple[UploadMessage, dg.DagsterRun, UploadStatusStore]:
    msg = message()
    status = UploadStatusStore.from_settings(settings)
    status.register(msg)
    run = instance.create_run_for_job(
        score_upload_job,
        run_config=run_config(msg).to_config_dict(),
        tags={UPLOAD_ID_TAG: msg.upload_id},
        status=dg.DagsterRunStatus.STARTED,
    )
    status.start(msg, run.run_id)
    return msg, run, status


def test_run_failure_sensor_waits_for_dagsters_retry_decision(
    daemonless_instance: dg.DagsterInstance, settings: AimqSettings, uploads_settings: AimqSettings
) -> None:
    """The race of issue 17: the failure event is stored before the run's status and its
    dagster/will_retry tag. A tick that reads the run in between must not take "no tag yet" for
    "no retry", nor a run still STARTED for a finished one."""
    msg, run, status = started_upload_run(daemonless_instance, settings)
    assert daemonless_instance.run_retries_enabled and daemonless_instance.run_retries_max_retries >= 1  # as shipped
    context = crashed_run_context(daemonless_instance, uploads_settings, msg, run)  # read before any of it landed
    # The reporting process is slow to write the status (and then the tag) on a busy machine.
    reporter = threading.Timer(1.0, lambda: daemonless_instance.report_run_failed(run))
    daemon = threading.Timer(2.0, lambda: retried_by_the_daemon(daemonless_instance, run.run_id))
    reporter.start()
    daemon.start()
    try:
        upload_run_failure(context)
    finally:
        reporter.join()
        daemon.join()
    record = status.get(msg.upload_id)
    assert record.state == "running" and record.error is None, record
    assert daemonless_instance.get_run_by_id(run.run_id).tags[WILL_RETRY_TAG] == "true"


def test_run_failure_sensor_decides_like_the_retry_daemon_when_no_tag_was_written(
    instance: dg.DagsterInstance, settings: AimqSettings, uploads_settings: AimqSettings
) -> None:
    msg, run, status = started_upload_run(instance, settings)
    # A failed status without a will_retry tag (its writer died in between): the sensor takes the
    # retry daemon's decision and records it, so both act on the same one.
    instance.handle_run_event(
        run.run_id,
        dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.RUN_FAILURE.value,
            job_name=run.job_name,
        ),
    )
    failed = instance.get_run_by_id(run.run_id)
    assert failed.status == dg.DagsterRunStatus.FAILURE and WILL_RETRY_TAG not in failed.tags
    assert retry_follows(instance, run.run_id)
    assert instance.get_run_by_id(run.run_id).tags[WILL_RETRY_TAG] == "true"
    retried_by_the_daemon(instance, run.run_id)
    upload_run_failure(crashed_run_context(instance, uploads_settings, msg, failed))
    assert status.get(msg.upload_id).state == "running"


def test_a_retry_the_daemon_skipped_rewinds_it_and_never_leaves_the_upload_running(
    daemonless_instance: dg.DagsterInstance,
    settings: AimqSettings,
    uploads_settings: AimqSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dagster's retry daemon read the run before its status said FAILURE and moved its cursor past
    the failure event (seen under contention): the sensor sets the cursor back to just before that
    event, so the daemon reads it again. With no daemon here to act on it, the upload ends failed
    with what to do, not `running` for ever."""
    monkeypatch.setattr(run_failures, "RETRY_APPEAR_S", 0.3)
    msg, run, status = started_upload_run(daemonless_instance, settings)
    daemonless_instance.report_run_failed(run)
    assert daemonless_instance.get_run_by_id(run.run_id).tags[WILL_RETRY_TAG] == "true"
    key = _create_cursor_key(dg.DagsterEventType.RUN_FAILURE)
    past = daemonless_instance.event_log_storage.get_maximum_record_id()
    daemonless_instance.daemon_cursor_storage.set_cursor_values({key: str(past)})  # the daemon passed it by
    upload_run_failure(
        crashed_run_context(daemonless_instance, uploads_settings, msg, daemonless_instance.get_run_by_id(run.run_id))
    )
    failures = daemonless_instance.event_log_storage.get_logs_for_all_runs_by_log_id(
        after_cursor=-1, dagster_event_type={dg.DagsterEventType.RUN_FAILURE}
    )
    [failure_id] = [i for i, e in failures.items() if e.run_id == run.run_id]
    assert int(daemonless_instance.daemon_cursor_storage.get_cursor_values({key})[key]) == failure_id - 1
    record = status.get(msg.upload_id)
    assert record.state == "failed" and "did not retry it" in record.error, record


def test_run_failure_sensor_marks_the_upload_once_no_retry_is_left(
    daemonless_instance: dg.DagsterInstance, settings: AimqSettings, uploads_settings: AimqSettings
) -> None:
    msg, run, status = started_upload_run(daemonless_instance, settings)
    daemonless_instance.add_run_tags(run.run_id, {"dagster/max_retries": "0"})  # the last attempt of a group
    context = crashed_run_context(daemonless_instance, uploads_settings, msg, run)
    daemonless_instance.report_run_failed(run)
    upload_run_failure(context)
    record = status.get(msg.upload_id)
    assert record.state == "failed" and f"scoring run {run.run_id} failed" in record.error, record


def test_a_tick_waits_for_the_first_upload_and_takes_the_burst_that_follows(
    broker: Broker, uploads_settings: AimqSettings, instance: dg.DagsterInstance
) -> None:
    msgs = [message() for _ in range(5)]

    def publish_later() -> None:
        time.sleep(0.5)
        for msg in msgs:
            broker_late.publisher.publish(msg)
            time.sleep(0.05)  # closer together than the linger: one burst

    broker_late = Broker(uploads_settings)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(publish_later)
            # Published while the tick waits on the empty queue: all five requested by this tick.
            outcome = tick(instance, resource(uploads_settings, sensor_wait_s=4.0, sensor_linger_s=0.5))
            pending.result()
    finally:
        broker_late.close()
    assert [r.run_key for r in outcome.run_requests] == [m.upload_id for m in msgs]
    assert redeliver(broker) == 5  # still not acknowledged: their runs do not exist yet


def test_a_waiting_tick_ends_at_its_wait_on_an_empty_queue(
    broker: Broker, uploads_settings: AimqSettings, instance: dg.DagsterInstance
) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        # Returns after its wait with nothing to do: it does not block the sensor for ever.
        outcome = pool.submit(tick, instance, resource(uploads_settings, sensor_wait_s=0.5)).result(timeout=30)
    assert outcome.run_requests == [] and "0 run(s) requested" in outcome.skip_reason.skip_message


def test_a_tick_records_its_pacing_and_waits_less_after_the_daemon_skipped_a_loop(
    broker: Broker, uploads_settings: AimqSettings, instance: dg.DagsterInstance
) -> None:
    uploads = resource(uploads_settings, sensor_wait_s=2.0)

    def tick_after(cursor: str | None) -> TickPacing:
        context = dg.build_sensor_context(
            instance=instance, sensor_name=UPLOAD_SENSOR, resources={"uploads": uploads}, cursor=cursor
        )
        result = upload_sensor(context)
        pacing = TickPacing.parse(result.cursor)
        assert pacing is not None, result.cursor
        return pacing

    first = tick_after(None)
    assert first.wait_s == 2.0  # no rhythm known yet: the ceiling
    # The previous tick started 10 s ago: the daemon's 5 s loop skipped the sensor once.
    skipped = TickPacing(wait_s=2.0, started=time.time() - 10).cursor()
    assert tick_after(skipped).wait_s == 2.0 - BACK_OFF_S


def daemon_creates(instance: dg.DagsterInstance, request: dg.RunRequest, *, launched: bool) -> dg.DagsterRun:
    """The run the daemon creates for a request of this sensor (with Dagster's own tags)."""
    job = {j.name: j for j in (score_upload_job, score_uploads_job)}[request.job_name]
    run = instance.create_run_for_job(
        job,
        run_config=request.run_config,
        tags={**request.tags, RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: UPLOAD_SENSOR},
    )
    if launched:
        instance.report_run_canceled(run)
    return run


def test_uploads_waiting_together_become_backlog_runs_each_upload_in_one(
    broker: Broker, uploads_settings: AimqSettings, instance: dg.DagsterInstance
) -> None:
    msgs = [message() for _ in range(5)]
    for msg in msgs:
        broker.publisher.publish(msg)
    uploads = resource(uploads_settings, scoring_uploads_per_run=2)

    outcome = tick(instance, uploads)
    # At most 2 uploads a run: two backlog runs and one upload alone (a run of its own).
    assert sorted(r.job_name for r in outcome.run_requests) == ["score_upload", "score_uploads", "score_uploads"]
    members = [uploads_of(dg.DagsterRun(job_name=r.job_name, run_id="x", tags=r.tags)) for r in outcome.run_requests]
    assert sorted(i for m in members for i in m) == sorted(m.upload_id for m in msgs)
    backlog = next(r for r in outcome.run_requests if r.job_name == "score_uploads")
    listed = [u["upload_id"] for u in backlog.run_config["ops"]["list_uploads"]["config"]["uploads"]]
    assert listed == [v for k, v in backlog.tags.items() if k.startswith("aimq/upload.")]
    assert redeliver(broker) == 5  # nothing acknowledged before the runs exist

    # The same messages again (the daemon died before submitting): the same runs, by their keys.
    again = tick(instance, uploads)
    assert redeliver(broker) == 5
    assert sorted(r.run_key for r in again.run_requests) == sorted(r.run_key for r in outcome.run_requests)

    for request in outcome.run_requests:
        daemon_creates(instance, request, launched=True)
    done = tick(instance, uploads)
    assert done.run_requests == [] and "5 message(s) acknowledged" in done.skip_reason.skip_message
    assert broker.ready() == 0


def test_a_backlog_run_never_launched_is_requested_again_word_for_word(
    broker: Broker, uploads_settings: AimqSettings, instance: dg.DagsterInstance
) -> None:
    msgs = [message() for _ in range(4)]
    for msg in msgs:
        broker.publisher.publish(msg)
    uploads = resource(uploads_settings, scoring_uploads_per_run=2)
    waiting, launched = tick(instance, uploads).run_requests  # two backlog runs of two uploads
    run = daemon_creates(instance, waiting, launched=False)  # created, then the daemon died
    daemon_creates(instance, launched, launched=True)

    late = message()  # a new upload arrives meanwhile: it must not join the waiting run
    broker.publisher.publish(late)
    assert redeliver(broker) == 5
    outcome = tick(instance, uploads)
    again = next(r for r in outcome.run_requests if r.run_key == waiting.run_key)
    assert (again.job_name, again.run_config) == ("score_uploads", run.run_config)
    assert sorted(uploads_of(run)) == sorted(
        k.removeprefix("aimq/upload.") for k in again.tags if k.startswith("aimq/upload.")
    )
    assert [r.run_key for r in outcome.run_requests if r is not again] == [late.upload_id]
    assert redeliver(broker) == 3  # the launched run's two are acknowledged; the rest wait for their runs


def test_run_failure_of_a_backlog_marks_only_its_unfinished_uploads(
    daemonless_instance: dg.DagsterInstance, settings: AimqSettings, uploads_settings: AimqSettings
) -> None:
    scored, unfinished = message(), message()
    status = UploadStatusStore.from_settings(settings)
    for msg in (scored, unfinished):
        status.register(msg)
    request = dg.RunRequest(
        run_key="uploads-test",
        job_name="score_uploads",
        run_config={
            "ops": {
                "list_uploads": {
                    "config": {
                        "uploads": [
                            run_config(m).to_config_dict()["ops"]["score_file"]["config"] for m in (scored, unfinished)
                        ]
                    }
                }
            }
        },
        tags={upload_tag(m.upload_id): m.upload_id for m in (scored, unfinished)},
    )
    run = daemon_creates(daemonless_instance, request, launched=False)
    for msg in (scored, unfinished):
        status.start(msg, run.run_id)
    status.succeed(scored.upload_id, rows_total=1, rows_rejected=0, model_versions={"A": 1}, stats={})
    daemonless_instance.report_run_failed(run)
    daemonless_instance.add_run_tags(run.run_id, {WILL_RETRY_TAG: "false"})  # its last retry
    failure = daemonless_instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records[0]
    context = dg.build_run_status_sensor_context(
        sensor_name="upload_run_failure",
        dagster_event=failure.event_log_entry.dagster_event,
        dagster_instance=daemonless_instance,
        dagster_run=daemonless_instance.get_run_by_id(run.run_id),
        resources={"uploads": resource(uploads_settings)},
    )
    upload_run_failure(context)
    assert status.get(scored.upload_id).state == "succeeded"  # finished on its own: untouched
    record = status.get(unfinished.upload_id)
    assert record.state == "failed" and f"scoring run {run.run_id} failed" in record.error


def test_an_idle_body_whose_upload_is_queued_or_has_a_run_is_kept(
    broker: Broker, uploads_settings: AimqSettings, instance: dg.DagsterInstance
) -> None:
    # The API was killed right after the broker's confirm: its body stays in incoming/ for the
    # run to move into place, however long the message waits for the sensor or the run in Dagster's queue.
    storage = UploadStorage(uploads_settings.resolved_upload_dir)
    queued, abandoned = message(), new_upload_id()
    for upload_id in (queued.upload_id, abandoned):
        storage.incoming_path(upload_id).write_bytes(b"model_group,model\n")
        long_ago = time.time() - uploads_settings.upload_abandoned_after_s - 60
        os.utime(storage.incoming_path(upload_id), (long_ago, long_ago))
    broker.publisher.publish(queued)
    uploads = resource(uploads_settings)
    (request,) = tick(instance, uploads).run_requests
    assert storage.incoming_path(queued.upload_id).exists()  # its message was taken by this tick
    assert not storage.incoming_path(abandoned).exists()
    instance.create_run_for_job(  # its run is going: it will claim the body
        score_upload_job,
        run_config=request.run_config,
        status=dg.DagsterRunStatus.STARTED,
        tags={**request.tags, RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: UPLOAD_SENSOR},
    )
    assert redeliver(broker) == 1
    tick(instance, uploads)  # acknowledges the message: the run exists
    assert broker.ready() == 0
    tick(instance, uploads)
    assert storage.incoming_path(queued.upload_id).exists()  # its run has not finished


def test_a_routine_tick_writes_no_log_file(
    broker: Broker, uploads_settings: AimqSettings, instance: dg.DagsterInstance, dagster_home: Path
) -> None:
    # Dagster opens a log file for a tick whose context.log is used (as the daemon builds the context:
    # from the instance's ref), and its tick purge never deletes it: an empty tick, the daemon's most
    # common, must not make one.
    with dg.build_sensor_context(
        instance_ref=instance.get_ref(),
        sensor_name=UPLOAD_SENSOR,
        repository_name="aimq-test",
        resources={"uploads": resource(uploads_settings)},
    ) as context:
        outcome = upload_sensor(context)
    assert outcome.run_requests == []
    assert not list((dagster_home / "storage").glob("aimq-test/**/*.*")), "a log file for a routine tick"
