"""`aimq train`: the code location's ``train_models`` job, run in this process for all groups or some."""

from __future__ import annotations

import time
from collections.abc import Sequence

import dagster as dg

from aimq_cli.errors import CliError
from aimq_cli.instance import dagster_home
from aimq_cli.progress_logger import progress_logger
from aimq_pipelines.definitions import defs
from aimq_pipelines.models.groups import group_name
from aimq_pipelines.models.jobs import train_models_job
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings


def cmd_train(settings: AimqSettings, groups: Sequence[str]) -> int:
    ModelStore.from_settings(settings).current_versions()  # fail fast, in one line, when Redis is down
    dagster_home(settings)
    started = time.perf_counter()
    # The job as the code location defines it (assets, checks, resources), subset to the groups'
    # assets; their checks come with them. Recorded in the local instance, so the run and its
    # materializations show in the Dagster UI; the progress logger replaces Dagster's console logger
    # with one line per step.
    job = defs.resolve_job_def(train_models_job.name).with_logger_defs({"progress": progress_logger})
    selected = dg.AssetSelection.groups(*(group_name(g) for g in groups)).resolve(defs.resolve_asset_graph())
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            run_config={"loggers": {"progress": {}}},
            instance=instance,
            raise_on_error=False,
            asset_selection=sorted(selected),
            tags={"aimq/trigger": "cli"},
        )
    if not result.success:
        # A blocking check that failed (e.g. champion_challenger: the served version stays) says why itself.
        stopped = [e for e in result.get_asset_check_evaluations() if not e.passed]
        if stopped:
            why = "; ".join(f"{e.asset_key.to_user_string()} {e.check_name}: {e.description}" for e in stopped)
            raise CliError(f"training stopped by a check, nothing new served: {why} (run {result.run_id})")
        failures = [e for e in result.all_events if e.is_step_failure]
        failed = [e.step_key for e in failures]
        # The first failure's own reason (e.g. RedisAI refusing a model), not only where it happened.
        error = failures[0].step_failure_data.error if failures else None
        reason = f": {error.message.strip()}" if error is not None else ""
        raise CliError(
            f"training failed in {', '.join(failed) or 'the run'}{reason} (run {result.run_id}); see the Dagster UI"
        )
    store = ModelStore.from_settings(settings)
    for group in groups:
        info = store.info(group, store.current_version(group))
        m = info.metrics
        print(f"group {group}: version {info.version} is current  R2 {m['r2']:.4f}  MAPE {m['mape']:.2%}")
    print(f"trained {len(groups)} group(s) in {time.perf_counter() - started:.1f} s (run {result.run_id})")
    return 0
