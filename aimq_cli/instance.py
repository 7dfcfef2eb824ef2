"""The local Dagster instance of `aimq up` and `aimq train`: DAGSTER_HOME and its dagster.yaml."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from aimq_serving.settings import AimqSettings

# Package data (pyproject.toml), so a pip-installed aimq has it too. Rendered by
# deploy/render_config.py from deploy/dagster/local.yaml and common.yaml, like the compose and
# Kubernetes variants.
DAGSTER_YAML = Path(__file__).resolve().with_name("dagster.yaml")


def dagster_home(settings: AimqSettings) -> Path:
    """DAGSTER_HOME from the environment, else data_dir/dagster_home seeded with ``DAGSTER_YAML``."""
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    home = settings.data_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(DAGSTER_YAML, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home
