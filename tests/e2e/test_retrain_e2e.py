"""Retraining on drift with a real dagster-daemon: the drift_retrain sensor, ticking in the daemon,
turns a group's persistent drift into one train_models run of that group, which the daemon launches as
a real run process; the run passes the champion/challenger check and serves a new version.

A daemon, code server, Dagster instance, model-store prefix and queue of this module's own: the
session's models and instance are left as they are (a retrain there would change the served versions
other tests compare with), and the instance holds no training run, so the cooldown starts clean."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from aimq_pipelines.models.resources import ModelStoreResource, TrainingDataSource
from aimq_pipelines.monitoring.retrain import GROUP_TAG, REASON_TAG, chain_of
from aimq_pipelines.monitoring.scored_uploads import materialization
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings
from tests.helpers.drift_reports import group_report, report
from tests.helpers.local_home import seed_local_home
from tests.helpers.model_chain import group_chain
from tests.helpers.platform import Platform, make_platform
from tests.helpers.session import TEST_ROWS_PER_GROUP
from tests.helpers.topology import delete_topology, unique_topology_settings

pytestmark = pytest.mark.slow

GROUP = "A"


@pytest.fixture(scope="module")
def own(settings: AimqSettings, run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AimqSettings]:
    base = tmp_path_factory.mktemp("retrain-e2e")
    own = unique_topology_settings(settings, run_id, base / "uploads").model_copy(
        update={"redis_prefix": f"{settings.redis_prefix}-retrain"}
    )
    yield own
    delete_topology(own)
    ModelStore.from_settings(own).clear()


@pytest.fixture(scope="module")
def home(own: AimqSettings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = seed_local_home(tmp_path_factory.mktemp("retrain-dagster-home"))
    # The group's first version, trained in a scratch instance: the daemon's sees no training run yet.
    with dg.instance_for_test() as scratch:
        result = dg.materialize(
            group_chain(GROUP),
            instance=scratch,
            resources={
                "io_manager": dg.FilesystemIOManager(base_dir=str(home / "scratch-io")),
                "model_store": ModelStoreResource(prefix=own.redis_prefix),
                "training_source": TrainingDataSource(rows_per_group=TEST_ROWS_PER_GROUP),
            },
        )
        assert result.success
    return home


@pytest.fixture(scope="module")
def daemon(own: AimqSettings, home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    platform = make_platform(own, {"DAGSTER_HOME": str(home)}, tmp_path_factory.mktemp("retrain-logs"))
    try:
        platform.start_daemon()
        yield platform
    finally:
        platform.stop()


def retrain_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(job_name="train_models", tags={GROUP_TAG: GROUP})))


def test_persistent_drift_retrains_the_group_once_through_the_daemon(
    daemon: Platform, home: Path, own: AimqSettings
) -> None:
    store = ModelStore.from_settings(own)
    before = store.current_version(GROUP)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        verdicts = ["no_drift", "drift", "not_judged", "drift", "drift", "drift", "drift"]
        for n, verdict in enumerate(verdicts, start=1):
            drifted = ("kilometers",) if verdict == "drift" else ()
            instance.report_runless_asset_event(
                materialization(
                    f"upload{n}",
                    original_name="f.csv",
                    rows_total=300,
                    rows_rejected=0,
                    model_versions={GROUP: before},
                    drift=report(A=group_report(verdict, drifted=drifted, version=before)),
                )
            )

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            daemon.check_alive()
            runs = retrain_runs(instance)
            if runs and all(r.is_finished for r in runs):
                break
            time.sleep(1)
        (run,) = retrain_runs(instance)
        assert run.status == dg.DagsterRunStatus.SUCCESS, daemon.services["dagster-daemon"].tail()
        assert run.tags["dagster/sensor_name"] == "drift_retrain"
        # upload2, 4 and 5: three consecutive judged drifting uploads (3 was not judged).
        assert run.tags[REASON_TAG].startswith(
            "drift in 3 consecutive judged uploads of group A (k=3; last: upload2, upload4, upload5)"
        )

        def events(kind: dg.DagsterEventType) -> list[dg.DagsterEvent]:
            records = instance.get_records_for_run(run.run_id, of_type=kind).records
            return [r.event_log_entry.dagster_event for r in records]

        materialized = {e.asset_key for e in events(dg.DagsterEventType.ASSET_MATERIALIZATION)}
        assert materialized == set(chain_of(GROUP)[0])
        checks = {
            e.event_specific_data.check_name: e.event_specific_data
            for e in events(dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        }
        assert checks["champion_challenger"].passed  # the same data: no worse than the served version
        assert checks["champion_challenger"].metadata["champion_version"].value == before
        assert store.current_version(GROUP) > before
        # Uploads 6 and 7 drifted too: the count started again after the request, and the cooldown holds.
        assert len(retrain_runs(instance)) == 1
