"""The instance config `aimq up` and `aimq train` seed DAGSTER_HOME with ships inside aimq_cli: a
pip-installed aimq, with no checkout beside it, has it and seeds a DAGSTER_HOME with it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import aimq_cli
from aimq_cli import instance
from aimq_cli.instance import DAGSTER_YAML, local_instance, seed_config
from tests.helpers.deploy import REPO

# What the wheel is built from: what the Dockerfile copies into its build stage.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "aimq_cli", "aimq_pipelines", "aimq_serving", "aimq_tabular")
# Run by the installed copy, from a folder without the checkout on sys.path.
SEED = """
import json
import aimq_cli
from aimq_cli.instance import DAGSTER_YAML, dagster_home
from aimq_serving.settings import AimqSettings
home = dagster_home(AimqSettings())
print(json.dumps({"package": aimq_cli.__file__, "config": str(DAGSTER_YAML), "home": str(home)}))
"""


def test_the_instance_config_lives_in_the_package() -> None:
    assert DAGSTER_YAML.parent == Path(aimq_cli.__file__).resolve().parent
    assert DAGSTER_YAML.is_file()


def test_an_installed_wheel_seeds_dagster_home_with_its_own_config(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # Offline, with the build backend of this environment, as the Dockerfile builds the image.
    build = [
        *pip,
        "wheel",
        "--no-deps",
        "--no-index",
        "--no-build-isolation",
        "-w",
        str(tmp_path / "dist"),
        str(source),
    ]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("aimq-*.whl")
    assert "aimq_cli/dagster.yaml" in zipfile.ZipFile(wheel).namelist()

    site = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True, timeout=300
    )
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env |= {"PYTHONPATH": str(site), "AIMQ_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.run(
        [sys.executable, "-c", SEED], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    seeded = json.loads(proc.stdout)
    assert Path(seeded["package"]).is_relative_to(site)
    assert Path(seeded["config"]) == (site / "aimq_cli" / "dagster.yaml").resolve()
    assert Path(seeded["home"]) == tmp_path / "data" / "dagster_home"
    assert (Path(seeded["home"]) / "dagster.yaml").read_text() == DAGSTER_YAML.read_text()


def test_the_shipped_config_is_recorded_with_the_ones_before_it() -> None:
    text = DAGSTER_YAML.read_text()
    assert instance._sha256(text) == instance.SHIPPED, (
        "aimq_cli/dagster.yaml changed: move the old instance.SHIPPED into instance.SHIPPED_BEFORE and set "
        "SHIPPED to the new text's SHA-256, so that homes seeded with the old config get the new one"
    )
    assert instance.SHIPPED not in instance.SHIPPED_BEFORE


def test_a_home_seeded_by_an_older_aimq_gets_the_current_config(tmp_path: Path) -> None:
    current = DAGSTER_YAML.read_text()
    # Seeded before aimq recorded what it wrote: recognised by the text an earlier aimq shipped.
    older = subprocess.run(
        ["git", "log", "--format=%H", "--", "aimq_cli/dagster.yaml"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    shipped_before = [
        subprocess.run(["git", "show", f"{c}:aimq_cli/dagster.yaml"], cwd=REPO, capture_output=True, text=True)
        for c in older
    ]
    texts = {p.stdout for p in shipped_before if p.returncode == 0 and p.stdout and p.stdout != current}
    if texts:  # a clone with history: every earlier text is known, none is kept
        assert {instance._sha256(t) for t in texts} <= instance.SHIPPED_BEFORE
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("# an older aimq's\n")
    instance.seed_config(home)
    assert (home / "dagster.yaml").read_text() == "# an older aimq's\n"  # unknown text: a user's, kept

    home2 = tmp_path / "home2"
    home2.mkdir()
    instance.seed_config(home2)  # a new home: seeded, and what was written recorded
    assert (home2 / "dagster.yaml").read_text() == current
    # aimq's own text from before (as it recorded it) is replaced; once edited, it is the user's.
    (home2 / instance.WRITTEN).write_text(instance._sha256("sensors: {}\n"))
    (home2 / "dagster.yaml").write_text("sensors: {}\n")
    instance.seed_config(home2)
    assert (home2 / "dagster.yaml").read_text() == current
    (home2 / "dagster.yaml").write_text(current + "# my edit\n")
    instance.seed_config(home2)
    assert (home2 / "dagster.yaml").read_text() == current + "# my edit\n"


def test_a_config_an_older_aimq_shipped_is_replaced(tmp_path: Path) -> None:
    shipped = subprocess.run(["git", "show", "9b9f47c:aimq_cli/dagster.yaml"], cwd=REPO, capture_output=True, text=True)
    if shipped.returncode:
        pytest.skip(f"this clone has no history to take an older dagster.yaml from: {shipped.stderr.strip()}")
    (tmp_path / "dagster.yaml").write_text(shipped.stdout)
    instance.seed_config(tmp_path)
    assert (tmp_path / "dagster.yaml").read_text() == DAGSTER_YAML.read_text()


def test_local_instance_opens_its_homes_files_whatever_dagster_home_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped storage's files follow DAGSTER_HOME: a process whose DAGSTER_HOME names another home
    (the soak benchmark watching its `aimq up`) opens the platform's through local_instance."""
    other = tmp_path / "other"
    monkeypatch.setenv("DAGSTER_HOME", str(other))
    home = tmp_path / "home"
    home.mkdir()
    seed_config(home)
    with local_instance(home) as instance:
        assert instance.get_runs_count() == 0
    assert (home / "history" / "runs.db").is_file() and not (other / "history").exists()
    assert os.environ["DAGSTER_HOME"] == str(other)
