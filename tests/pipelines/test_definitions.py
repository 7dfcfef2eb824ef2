"""The code location loads, and has one chain with its checks per model group."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from aimq_pipelines.definitions import defs
from aimq_serving import schema
from tests.helpers.paths import REPO

CHAIN = ("training_data", "feature_spec", "trained_model", "onnx_model", "served_model")
STAGES = (*CHAIN, "drift_profile")  # beside the ONNX export: trained_model -> drift_profile -> served_model


def test_dagster_definitions_validate(dagster_home: Path) -> None:
    cli = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(cli), "definitions", "validate", "-w", str(REPO / "workspace.yaml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful for code location aimq" in proc.stdout + proc.stderr


def test_one_chain_per_group_in_order() -> None:
    graph = defs.resolve_asset_graph()
    for group in schema.MODEL_GROUPS:
        keys = [dg.AssetKey([group, stage]) for stage in CHAIN]
        for upstream, downstream in zip(keys, keys[1:]):
            assert upstream in graph.get(downstream).parent_keys
        profile = dg.AssetKey([group, "drift_profile"])
        assert graph.get(profile).parent_keys == {dg.AssetKey([group, "training_data"]), keys[2]}
        assert profile in graph.get(keys[-1]).parent_keys
        assert {graph.get(k).group_name for k in [*keys, profile]} == {f"model_{group}"}


def test_quality_checks_are_blocking() -> None:
    graph = defs.resolve_asset_graph()
    specs = [graph.get_check_spec(key) for key in graph.asset_check_keys]
    checks = {(*spec.asset_key.path, spec.name): spec for spec in specs}
    for group in schema.MODEL_GROUPS:
        for asset, name in (
            ("training_data", "schema_and_size"),
            ("trained_model", "holdout_quality"),
            ("trained_model", "champion_challenger"),
            ("onnx_model", "matches_sklearn"),
        ):
            assert checks[(group, asset, name)].blocking


def test_training_job_and_schedule() -> None:
    job = defs.resolve_job_def("train_models")
    assert {k.path[1] for k in job.asset_layer.selected_asset_keys} == set(STAGES)
    schedule = defs.resolve_schedule_def("retrain_models")
    assert schedule.job_name == "train_models"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    context = dg.build_schedule_context(scheduled_execution_time=None)
    request = schedule.evaluate_tick(context).run_requests[0]
    assert request.job_name in (None, "train_models")


def test_monitoring_assets_and_sensors() -> None:
    graph = defs.resolve_asset_graph()
    scored = graph.get(dg.AssetKey("scored_uploads"))
    assert {dg.AssetKey([g, "served_model"]) for g in schema.MODEL_GROUPS} <= set(scored.parent_keys)
    assert isinstance(scored.partitions_def, dg.DynamicPartitionsDefinition)
    assert {c.name for c in scored.check_keys} == {"input_drift", "input_schema"}
    for group in schema.MODEL_GROUPS:
        assert dg.AssetKey("scored_uploads") in graph.get(dg.AssetKey([group, "drift_history"])).parent_keys
    for name in ("drift_retrain", "drift_history_refresh"):
        assert defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING
