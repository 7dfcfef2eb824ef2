"""A local Dagster home for a test, beside the session's."""

from __future__ import annotations

from pathlib import Path

import yaml

from aimq_cli.instance import DAGSTER_YAML


def seed_local_home(home: Path) -> Path:
    """``home`` with `aimq up`'s dagster.yaml, its SQLite storage kept in ``home``. As shipped the storage
    follows DAGSTER_HOME (`{env: DAGSTER_HOME}`: the instance's directory in every aimq process), and a
    test opens homes while DAGSTER_HOME names the session's."""
    config = yaml.safe_load(DAGSTER_YAML.read_text())
    config["storage"]["custom"]["config"]["base_dir"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return home
