"""Several upload sensors (shards) reading one queue: no upload gets two runs, whichever sensor takes
its messages and whenever; against the real RabbitMQ and Dagster instances (and, for a daemon that
dies after writing a tick's requests, Dagster's own sensor daemon loop)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import pytest

from aimq_pipelines import dagster_internals
from aimq_pipelines.definitions import defs
from aimq_pipelines.uploads import held_connections
from aimq_pipelines.uploads.jobs import run_config, score_upload_job, upload_tag
from aimq_pipelines.uploads.sensors import (
    UPLOAD_SENSOR,
    UPLOAD_SENSORS,
    free_run_slots,
    is_upload_sensor,
    runs_of,
    shard_names,
)
from aimq_serving.settings import AimqSettings
from tests.helpers.daemon_loop import sensor_iteration, use_code_location_env
from tests.helpers.local_home import seed_local_home
from tests.pipelines.uploads.test_sensors import Broker, daemon_creates, message, resource

OTHER = "upload_sensor_2"


@pytest.fixture(autouse=True)
def _let_go_of_held_connections() -> Iterator[None]:
    yield
    held_connections.release_all()


@pytest.fixture
def broker(uploads_settings: AimqSettings) -> Iterator[Broker]:
    b = Broker(uploads_settings)
    yield b
    b.close()


def tick_of(name: str, instance: dg.DagsterInstance, uploads: object) -> dg.SensorResult:
    sensor = next(s for s in UPLOAD_SENSORS if s.name == name)
    return sensor(dg.build_sensor_context(instance=instance, sensor_name=name, resources={"uploads": uploads}))


def test_the_shards_are_upload_sensors_of_the_code_location() -> None:
    names = {s.name for s in defs.sensors}
    assert set(shard_names(AimqSettings().sensor_shards)) <= names
    assert shard_names(3) == ("upload_sensor", "upload_sensor_2", "upload_sensor_3")
    assert all(is_upload_sensor(n) for n in shard_names(16)) and is_upload_sensor("upload_sensor_17")
    assert not any(is_upload_sensor(n) for n in ("upload_run_failure", "upload_sensor_", "upload_sensorx", None))


def test_a_second_copy_taken_by_another_shard_while_the_run_is_created_gets_no_second_run(
    broker: Broker, uploads_settings: AimqSettings, instance: dg.DagsterInstance
) -> None:
    msg = message()
    broker.publisher.publish(msg)
    uploads = resource(uploads_settings)
    (request,) = tick_of(UPLOAD_SENSOR, instance, uploads).run_requests
    # Held out of sight while the daemon creates its run: another shard's open tick finds nothing.
    assert broker.count(broker.topology.queue) == 0
    assert tick_of(OTHER, instance, uploads).run_requests == []

    broker.publisher.publish(msg)  # a second copy (a publisher retry after a lost confirm)
    assert broker.ready() == 1
    assert tick_of(OTHER, instance, uploads).run_requests == []  # claimed by the first shard's tick
    assert broker.ready() == 1  # left unacknowledged: its run does not exist yet

    run = daemon_creates(instance, request, launched=True)
    done = tick_of(OTHER, instance, uploads)
    assert done.run_requests == [] and "1 message(s) acknowledged" in done.skip_reason.skip_message
    # The first shard's next tick lets its copy go, and acknowledges it: the run exists.
    again = tick_of(UPLOAD_SENSOR, instance, uploads)
    assert again.run_requests == []
    held_connections.release_all()
    assert broker.ready() == 0 or tick_of(OTHER, instance, uploads).run_requests == []
    assert broker.ready() == 0
    assert [r.run_id for r in runs_of(instance, msg.upload_id)] == [run.run_id]


def test_a_run_created_but_never_launched_is_requested_again_only_by_its_own_shard(
    broker: Broker, uploads_settings: AimqSettings, instance: dg.DagsterInstance
) -> None:
    msg = message()
    broker.publisher.publish(msg)
    uploads = resource(uploads_settings)
    (request,) = tick_of(UPLOAD_SENSOR, instance, uploads).run_requests
    daemon_creates(instance, request, launched=False)  # created, then the daemon died
    held_connections.release_all()  # the code server died too: the message is back
    assert broker.ready() == 1
    # The other shard's run key would not find that run: a second one would be created.
    assert tick_of(OTHER, instance, uploads).run_requests == []
    assert broker.ready() == 1
    (again,) = tick_of(UPLOAD_SENSOR, instance, uploads).run_requests
    assert again.run_key == request.run_key


def test_a_redelivered_message_whose_requests_a_dead_daemon_wrote_is_left_to_the_resumed_tick(
    uploads_settings: AimqSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Dagster's sensor daemon loop, killed right after it wrote a shard's requests into its tick
    (the moment before it submits them), with the code server gone too: the message is back in the
    queue, redelivered, no run exists, and any other shard must leave it to that tick, which the
    next daemon resumes."""
    use_code_location_env(monkeypatch, uploads_settings, AIMQ_SENSOR_SHARDS="2", AIMQ_SENSOR_WAIT_S="0")
    msg = message()
    publisher = Broker(uploads_settings)  # closed at once: its heartbeats would go unanswered meanwhile
    publisher.publisher.publish(msg)
    publisher.close()
    names = frozenset(shard_names(2))
    crash = {name: {"RUN_IDS_RESERVED": RuntimeError("the daemon dies here")} for name in names}
    home = tmp_path / "home"
    home.mkdir()
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        sensor_iteration(instance, crash)
        pending = dagster_internals.pending_sensor_requests(instance, names)
        assert [r.tags[upload_tag(msg.upload_id)] for r in pending] == [msg.upload_id]
        assert runs_of(instance, msg.upload_id) == []
        # The workspace's code server is gone (or going), and its held connection with it.
        broker = Broker(uploads_settings)
        request.addfinalizer(broker.close)
        deadline = time.monotonic() + 60
        while broker.count(broker.topology.queue) == 0:
            assert time.monotonic() < deadline, "the message did not come back"
            time.sleep(0.2)

        uploads = resource(uploads_settings)
        for name in names:
            assert tick_of(name, instance, uploads).run_requests == []
            held_connections.release_all()
            assert broker.ready() == 1  # left for the tick that will submit its run


def test_shards_take_turns_so_a_burst_becomes_one_ticks_runs(
    broker: Broker, uploads_settings: AimqSettings, instance: dg.DagsterInstance
) -> None:
    uploads = resource(uploads_settings, sensor_wait_s=3.0, sensor_linger_s=0.5, scoring_uploads_per_run=25)
    msgs = [message() for _ in range(5)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        ticks = [pool.submit(tick_of, name, instance, uploads) for name in (UPLOAD_SENSOR, OTHER)]
        time.sleep(0.5)  # both ticks open, one of them taking, the other waiting for its turn
        for msg in msgs:
            broker.publisher.publish(msg)
        results = [t.result(timeout=30) for t in ticks]
    # All five requested by one shard's tick (as backlog runs, one per run slot); the other found nothing.
    assert sorted(bool(r.run_requests) for r in results) == [False, True]
    runs = [r for result in results for r in result.run_requests]
    assert 1 <= len(runs) <= 2  # split over the free run slots (2 at most here)
    members = [k.removeprefix("aimq/upload.") for r in runs for k in r.tags if k.startswith("aimq/upload.")]
    assert sorted(members) == sorted(m.upload_id for m in msgs)


def test_a_burst_is_split_over_the_run_slots_that_are_free(tmp_path: Path) -> None:
    seed_local_home(tmp_path)  # `aimq up`'s: two runs at a time
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert free_run_slots(instance) == 2
        busy = instance.create_run_for_job(score_upload_job, run_config=run_config(message()).to_config_dict())
        instance.report_run_canceled(busy)  # a finished run takes no slot
        assert free_run_slots(instance) == 2
        instance.create_run_for_job(
            score_upload_job, run_config=run_config(message()).to_config_dict(), status=dg.DagsterRunStatus.STARTED
        )
        assert free_run_slots(instance) == 1
        instance.create_run_for_job(
            score_upload_job, run_config=run_config(message()).to_config_dict(), status=dg.DagsterRunStatus.STARTED
        )
        assert free_run_slots(instance) == 1  # never less than one: the run queue orders the rest
