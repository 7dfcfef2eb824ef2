"""Champion/challenger: a model version worse than the served one on the same holdout is never
promoted, by the blocking check or by served_model materialized alone; `aimq rollback` still works.

Real materializations of group C's chain into a model-store prefix and an IO-manager folder of this
module's own, so the session's trained store is left as it is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from aimq_pipelines.models.resources import ModelStoreResource, TrainingDataSource
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings
from tests.helpers.cli import one_error_line, run_aimq
from tests.helpers.model_chain import group_chain
from tests.helpers.session import TEST_ROWS_PER_GROUP

GROUP = "C"
# On 5,000 rows of group C: R2 0.90 (passes holdout_quality), holdout MAE 2.3x the default model's.
WORSE = {"max_iter": 20}


@pytest.fixture(scope="module")
def prefix(settings: AimqSettings) -> Iterator[str]:
    own = f"{settings.redis_prefix}-promotion"
    yield own
    ModelStore.from_settings(settings.model_copy(update={"redis_prefix": own})).clear()


@pytest.fixture(scope="module")
def own_store(settings: AimqSettings, prefix: str) -> ModelStore:
    return ModelStore.from_settings(settings.model_copy(update={"redis_prefix": prefix}))


def _materialize(
    instance: dg.DagsterInstance, prefix: str, io_dir: Path, config: dict | None = None, selection: list | None = None
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        group_chain(GROUP),
        selection=selection,
        instance=instance,
        resources={
            "io_manager": dg.FilesystemIOManager(base_dir=str(io_dir)),
            "model_store": ModelStoreResource(prefix=prefix),
            "training_source": TrainingDataSource(rows_per_group=TEST_ROWS_PER_GROUP),
        },
        run_config={"ops": {f"{GROUP}__trained_model": {"config": config or {}}}} if selection is None else None,
        raise_on_error=False,
    )


def _check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "champion_challenger"]
    return evaluation


@pytest.fixture(scope="module")
def io_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("promotion-io")


@pytest.fixture(scope="module")
def champion(instance: dg.DagsterInstance, prefix: str, own_store: ModelStore, io_dir: Path) -> int:
    result = _materialize(instance, prefix, io_dir)
    assert result.success
    evaluation = _check(result)
    assert evaluation.passed and evaluation.description == "no version is served yet: nothing to compare with"
    return own_store.current_version(GROUP)


def test_a_worse_challenger_is_never_promoted(
    instance: dg.DagsterInstance, prefix: str, own_store: ModelStore, io_dir: Path, champion: int
) -> None:
    result = _materialize(instance, prefix, io_dir, WORSE)
    assert not result.success
    evaluation = _check(result)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert meta["champion_version"] == champion
    assert meta["challenger_mae"] > meta["allowed_mae"] == pytest.approx(meta["champion_mae"] * 1.02)
    assert meta["rows_compared"] > 900 and meta["rows_excluded"] == 0
    assert f"version {champion} stays served" in evaluation.description
    materialized = {e.asset_key.path[1] for e in result.get_asset_materialization_events()}
    assert materialized == {"training_data", "feature_spec", "trained_model"}  # no export, no promotion
    assert own_store.current_version(GROUP) == champion and own_store.version_numbers(GROUP) == [champion]

    # served_model materialized alone on that stored challenger (no check in the run): still refused.
    alone = _materialize(
        instance, prefix, io_dir, selection=[dg.AssetKey([GROUP, "onnx_model"]), dg.AssetKey([GROUP, "served_model"])]
    )
    assert not alone.success
    failure = next(e for e in alone.all_events if e.is_step_failure)
    assert f"group {GROUP}: not stored: holdout MAE" in failure.step_failure_data.user_failure_data.description
    assert own_store.current_version(GROUP) == champion and own_store.version_numbers(GROUP) == [champion]


def test_a_challenger_no_worse_is_promoted_and_rollback_still_works(
    instance: dg.DagsterInstance, prefix: str, own_store: ModelStore, io_dir: Path, champion: int
) -> None:
    result = _materialize(instance, prefix, io_dir)  # the same data and seed: the same holdout error
    assert result.success
    evaluation = _check(result)
    assert evaluation.passed and evaluation.metadata["champion_version"].value == champion
    new = own_store.current_version(GROUP)
    assert new > champion

    proc = run_aimq("rollback", GROUP, AIMQ_REDIS_PREFIX=prefix)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"group {GROUP}: version {champion} is current"
    assert own_store.current_version(GROUP) == champion

    # The guard compares with what is served now: the rolled-back version.
    worse = _materialize(instance, prefix, io_dir, WORSE)
    assert _check(worse).metadata["champion_version"].value == champion and not _check(worse).passed
    assert own_store.current_version(GROUP) == champion


@pytest.mark.slow  # a cold `aimq train` process
def test_aimq_train_says_why_a_worse_challenger_was_not_served(
    prefix: str, own_store: ModelStore, champion: int
) -> None:
    served = own_store.current_version(GROUP)
    # 1,000 rows instead of 5,000: a challenger with a clearly higher holdout error.
    proc = run_aimq("train", "--group", GROUP, AIMQ_REDIS_PREFIX=prefix, AIMQ_TRAINING_ROWS_PER_GROUP="1000")
    line = one_error_line(proc)
    assert line.startswith(
        f"aimq: error: training stopped by a check, nothing new served: {GROUP}/trained_model champion_challenger: "
        "holdout MAE "
    )
    assert f"version {served} stays served" in line
    assert own_store.current_version(GROUP) == served
