"""One source of truth: the committed instance and workspace files are the rendering of deploy/dagster/."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.paths import REPO

sys.path.insert(0, str(REPO / "deploy"))
import render_config  # noqa: E402


@pytest.mark.parametrize("target", render_config.TARGETS, ids=lambda t: t.output)
def test_committed_file_is_its_rendering(target: render_config.Target) -> None:
    committed = (REPO / target.output).read_text()
    assert committed == render_config.render(target), (
        f"{target.output} differs from deploy/dagster/{'+'.join(target.fragments)}: run python deploy/render_config.py"
    )


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    for path in render_config.render_all():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, tmp_path / path)
    assert render_config.stale_files(tmp_path) == []
    local = tmp_path / "aimq_cli" / "dagster.yaml"
    local.write_text(local.read_text().replace("max_concurrent_runs: 2", "max_concurrent_runs: 3"))
    assert render_config.stale_files(tmp_path) == ["aimq_cli/dagster.yaml"]


def test_a_key_set_in_two_fragments_is_refused(tmp_path: Path) -> None:
    shutil.copytree(render_config.FRAGMENTS, tmp_path, dirs_exist_ok=True)
    (tmp_path / "local.yaml").write_text((tmp_path / "local.yaml").read_text() + "\ntelemetry:\n  enabled: true\n")
    with pytest.raises(render_config.RenderError, match="telemetry"):
        render_config.render(render_config.TARGETS[0], tmp_path)


def test_shared_settings_are_identical_in_every_instance_file() -> None:
    instances = {
        t.output: yaml.safe_load((REPO / t.output).read_text())
        for t in render_config.TARGETS
        if t.output.endswith("dagster.yaml")
    }
    common = yaml.safe_load((render_config.FRAGMENTS / "common.yaml").read_text())
    cluster = yaml.safe_load((render_config.FRAGMENTS / "cluster.yaml").read_text())
    cluster_targets = {t.output for t in render_config.TARGETS if "cluster.yaml" in t.fragments}
    for path, config in instances.items():
        assert {k: config[k] for k in common} == common, path
        if path in cluster_targets:
            assert {k: config[k] for k in cluster} == cluster, path
    assert instances["deploy/compose/dagster.yaml"]["storage"] == instances["k8s/base/dagster/dagster.yaml"]["storage"]


def test_the_root_dagster_yaml_is_the_package_one() -> None:
    """`DAGSTER_HOME=$PWD dagster dev` at the root and `aimq up` run the same instance config: both
    files render the same fragments, byte for byte alike, and each says where the other is read."""
    targets = {t.output: t for t in render_config.TARGETS}
    assert targets["dagster.yaml"].fragments == targets["aimq_cli/dagster.yaml"].fragments
    root = (REPO / "dagster.yaml").read_bytes()
    assert root == (REPO / "aimq_cli" / "dagster.yaml").read_bytes()
    assert b"DAGSTER_HOME=$PWD dagster dev" in root and b"aimq up" in root
