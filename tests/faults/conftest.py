"""Fault tests: the platform (dagster-daemon launching real run processes, the API under uvicorn) on a
private Redis and a private RabbitMQ node that the tests kill and restart.

One platform serves every test of this folder (a daemon start costs ~10 s on 2 cores); each test
checks only its own uploads. Its Dagster instance is its own too: the e2e platform's daemon may
still be running on the session's instance.

Each test that takes ``cpu`` runs twice: on the machine as it is, and with every core contended
(``tests.helpers.contention``): production machines are busy, and timing windows that never open on a quiet
machine open there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import dagster as dg
import pytest
import redis
from pydantic import SecretStr

from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings
from tests.helpers.contention import busy_cpus
from tests.helpers.faults import ABANDONED_AFTER_S, FaultPlatform
from tests.helpers.local_home import seed_local_home
from tests.helpers.platform import make_platform
from tests.helpers.redis_keys import copy_models
from tests.helpers.servers import RabbitServer, RedisServer
from tests.helpers.topology import unique_topology_settings


@pytest.fixture(scope="session")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("private-redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def private_rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitServer]:
    server = RabbitServer(tmp_path_factory.mktemp("private-rabbitmq"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def fault_platform(
    trained_store: ModelStore,
    settings: AimqSettings,
    redis_client: redis.Redis,
    run_id: str,
    session_dir: Path,
    private_redis: RedisServer,
    private_rabbit: RabbitServer,
    upload_records: None,
) -> Iterator[FaultPlatform]:
    with private_redis.client() as target:
        assert copy_models(redis_client, settings.redis_prefix, settings.redis_prefix, target=target), (
            "the trained store has no keys"
        )
    own = unique_topology_settings(settings, run_id, session_dir / "fault-uploads").model_copy(
        update={
            "redis_url": private_redis.url,
            "rabbitmq_url": SecretStr(private_rabbit.url),
            "sensor_interval_s": 1,
            # Progress after every 1,000 rows: a run is caught mid-file.
            "scoring_chunk_rows": 1000,
            "broker_confirm_timeout_s": 2.0,
            "redis_timeout_s": 1.0,
            "upload_abandoned_after_s": ABANDONED_AFTER_S,
        }
    )
    home = seed_local_home(session_dir / "fault-dagster-home")  # run retries and monitoring as shipped
    running = make_platform(own, {"DAGSTER_HOME": str(home)}, session_dir / "fault-logs")
    try:
        running.start_daemon()
        running.start_api()
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield FaultPlatform(running, own, instance, private_redis, private_rabbit)
    finally:
        running.stop()


@pytest.fixture(params=[False, True], ids=["quiet", "contended"])
def cpu(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Whether this run of the test has a busy-loop process pinned to each core, for its whole body."""
    with busy_cpus() if request.param else nullcontext():
        yield request.param
