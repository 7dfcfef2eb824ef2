"""The local Dagster instance of `aimq up` and `aimq train`: DAGSTER_HOME and its dagster.yaml."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from aimq_serving.settings import AimqSettings

if TYPE_CHECKING:
    from dagster import DagsterInstance

# Package data (pyproject.toml), so a pip-installed aimq has it too. Rendered by
# deploy/render_config.py from deploy/dagster/local.yaml and common.yaml, like the compose and
# Kubernetes variants.
DAGSTER_YAML = Path(__file__).resolve().with_name("dagster.yaml")
# Beside the seeded dagster.yaml: the SHA-256 of the text aimq wrote there, so a later aimq can tell
# its own earlier config (replaced by the current one) from one a user edited (kept, with a warning).
# Replacing matters: an instance seeded before the upload sensor shards kept 2 sensor workers, which
# starved the shards' ticks (every open tick holds a worker).
WRITTEN = ".aimq-dagster-yaml.sha256"
# The SHA-256 of every dagster.yaml an aimq shipped before it recorded what it wrote (git log --
# aimq_cli/dagster.yaml): a home holding one of these was seeded by aimq and never edited.
SHIPPED_BEFORE = frozenset(
    {
        "068a2158872aca2e96c349cd5b0038e579f1fc5aac8eede6b7c3f34787eb5dc7",
        "a68e4cc0d3d0081ec48e1d3b1822853119e6b8f506203829fcc143f83b74af03",
        "d688938bf1596960342c7f7d1083099fdec30d07b644dc7a5df98c62873a7fbe",
        "a147b7729bc2af387667c158acc62331c6e93bad3e3c16e535ce3cc563e2d0bb",
        "a3e653e98b47087c0f8735500cdb43c3cd0f29f0fe6b1c43d00cfb8631f69c49",
        "7163ae1ead48ae83f41b99f0206f78d46cd4e98657a4dda9af663911beda4d01",
        "a1223864019cc9da4f790a8dc4dadac9d122ee29d0b9f1bbb23caacdea9c6cd8",
        "2aba4aa5bb6e795e87272a6c3cf8e271931a3e4e3c0690bfd480f5eca9f4624f",
        "a1bc5482c07810965581dbd2bb6dfe61ef6fbf67af57d1bbfd6576c59c0fdeb3",
    }
)
# The SHA-256 of DAGSTER_YAML as this aimq ships it. Changing dagster.yaml: move this value into
# SHIPPED_BEFORE and set the new one here (tests/cli/test_instance.py fails until then), so that homes
# seeded with the old text get the new one.
SHIPPED = "21478d290ef529d09c39ad0f2eca18cb6580b4681cdd97693d5c98e27041e21f"


def dagster_home(settings: AimqSettings) -> Path:
    """DAGSTER_HOME from the environment, else data_dir/dagster_home seeded with ``DAGSTER_YAML``."""
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    home = settings.data_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    seed_config(home)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def seed_config(home: Path) -> None:
    """Write the current ``DAGSTER_YAML`` into ``home`` unless someone edited what aimq wrote there.

    A home seeded by an older aimq (its config as aimq wrote it: the recorded hash, or one of
    ``SHIPPED_BEFORE``) gets the current config; a config edited since aimq wrote it is kept, with a
    warning that it differs from the current one."""
    current = DAGSTER_YAML.read_text()
    config, record = home / "dagster.yaml", home / WRITTEN
    if config.exists():
        text = config.read_text()
        if text == current:
            record.write_text(_sha256(current))
            return
        wrote = record.read_text().strip() if record.exists() else None
        if _sha256(text) not in ({wrote} if wrote else SHIPPED_BEFORE):
            print(
                f"aimq: warning: {config} was edited since aimq wrote it and is kept; the config this aimq "
                f"ships differs from it: {DAGSTER_YAML}",
                file=sys.stderr,
            )
            return
    config.write_text(current)
    record.write_text(_sha256(current))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def local_instance(home: Path) -> Iterator[DagsterInstance]:
    """The Dagster instance of ``home`` (its dagster.yaml), opened with DAGSTER_HOME naming ``home`` while
    it loads. The local storage's files follow DAGSTER_HOME (deploy/dagster/local.yaml: Dagster has no
    way to name the instance's own directory there), so a process whose DAGSTER_HOME names another home
    (a benchmark watching the platform it started) would otherwise read that other one's."""
    import dagster as dg

    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        instance = dg.DagsterInstance.from_config(str(home))
    finally:
        if previous is None:
            del os.environ["DAGSTER_HOME"]
        else:
            os.environ["DAGSTER_HOME"] = previous
    with instance:
        yield instance
