"""Shared fixtures: every test run gets its own Redis key prefix, data dir and DAGSTER_HOME."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pytest
import redis

from aimq_cli.instance import DAGSTER_YAML
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings
from tests.helpers.session import REDIS_URL, TEST_ROWS_PER_GROUP
from tests.helpers.topology import delete_topology, unique_topology_settings

# Fixtures shared by the API and upload tests, wherever those tests live (tests/helpers), and the run's
# closing "tested versions" section.
pytest_plugins = [
    "tests.helpers.api_fixtures",
    "tests.helpers.upload_fixtures",
    "tests.helpers.scored_uploads",
    "tests.helpers.tested_versions",
]

if TYPE_CHECKING:
    from tests.helpers.platform import Platform


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("aimq")


@pytest.fixture(scope="session")
def settings(run_id: str, session_dir: Path) -> AimqSettings:
    """Settings of this test session; exported as AIMQ_* so subprocesses (daemon, API) agree."""
    values = {
        "AIMQ_REDIS_URL": REDIS_URL,
        "AIMQ_REDIS_PREFIX": f"aimqtest-{run_id}",
        "AIMQ_DATA_DIR": str(session_dir / "data"),
        "AIMQ_SIGNING_KEY": f"test-signing-key-{run_id}",
        "AIMQ_TRAINING_ROWS_PER_GROUP": str(TEST_ROWS_PER_GROUP),
    }
    os.environ.update(values)
    return AimqSettings()


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield client
    client.close()


@pytest.fixture(scope="session")
def dagster_home(session_dir: Path) -> Path:
    home = session_dir / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML.read_text())
    os.environ["DAGSTER_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def instance(dagster_home: Path) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.from_config(str(dagster_home)) as inst:
        yield inst


@pytest.fixture(scope="session")
def store(settings: AimqSettings, redis_client: redis.Redis) -> Iterator[ModelStore]:
    model_store = ModelStore.from_settings(settings)
    yield model_store
    model_store.clear()


@pytest.fixture(scope="session")
def training_run(store: ModelStore, settings: AimqSettings, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """One real materialization of the whole model chain (all groups) into the test prefix."""
    from aimq_pipelines.definitions import defs
    from aimq_pipelines.models.resources import ModelStoreResource, TrainingDataSource

    result = defs.resolve_job_def("train_models").execute_in_process(
        instance=instance,
        resources={
            "model_store": ModelStoreResource(),
            "training_source": TrainingDataSource(rows_per_group=TEST_ROWS_PER_GROUP),
        },
    )
    assert result.success
    return result


@pytest.fixture(scope="session")
def trained_store(store: ModelStore, training_run: dg.ExecuteInProcessResult) -> ModelStore:
    """The model store holding a current version of every group, made by the pipeline."""
    return store


# --- Batch scoring (uploads): queue names and an upload folder of their own per test ------------
@pytest.fixture(scope="session")
def upload_records(settings: AimqSettings, redis_client: redis.Redis) -> Iterator[None]:
    """Upload status records of the session live under its prefix; removed at the end."""
    yield
    for key in redis_client.scan_iter(match=f"{settings.redis_prefix}:uploads:*", count=500):
        redis_client.delete(key)


@pytest.fixture
def uploads_settings(
    settings: AimqSettings, run_id: str, tmp_path: Path, upload_records: None
) -> Iterator[AimqSettings]:
    """Session settings with this test's own exchange/queue names (deleted after) and upload dir."""
    own = unique_topology_settings(settings, run_id, tmp_path / "uploads")
    yield own
    delete_topology(own)


# --- End to end: the platform as real processes (dagster-daemon, API; dagster-webserver on demand) ---
@pytest.fixture(scope="session")
def platform(
    trained_store: ModelStore,
    settings: AimqSettings,
    run_id: str,
    session_dir: Path,
    dagster_home: Path,
    upload_records: None,
) -> Iterator[Platform]:
    """One daemon and one API for the whole session, over the trained models, with a queue of their own."""
    from tests.helpers.platform import make_platform

    own = unique_topology_settings(settings, run_id, session_dir / "e2e-uploads")
    # drift_history refreshed on every sensor tick that finds new uploads (default: at most every 5 minutes),
    # so a test sees its upload there within a tick.
    own = own.model_copy(update={"sensor_interval_s": 1, "drift_history_refresh_s": 0})
    running = make_platform(own, {"DAGSTER_HOME": str(dagster_home)}, session_dir / "e2e-logs")
    try:
        running.start_daemon()
        running.start_api()
        yield running
    finally:
        running.stop()
        delete_topology(own)


@pytest.fixture(scope="session")
def dagster_ui(platform: Platform) -> str:
    """dagster-webserver over the same instance and code; its URL (the API links runs there)."""
    platform.start_webserver()
    return platform.dagster_url
