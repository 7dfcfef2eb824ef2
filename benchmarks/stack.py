"""A throw-away platform for the benchmarks that run real processes: its own Redis prefix, queue
names, signing key, data folder and DAGSTER_HOME, all removed afterwards."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from aimq_cli.instance import DAGSTER_YAML


def throwaway_env(tag: str, work: Path) -> dict[str, str]:
    """AIMQ_* and DAGSTER_HOME for a platform living under the key prefix and queue names ``tag``
    and the folder ``work`` (which gets a DAGSTER_HOME with the dagster.yaml `aimq up` uses)."""
    home = work / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DAGSTER_YAML, home / "dagster.yaml")
    return {
        "DAGSTER_HOME": str(home),
        "AIMQ_REDIS_PREFIX": tag,
        "AIMQ_DATA_DIR": str(work / "data"),
        "AIMQ_SIGNING_KEY": f"bench-{tag}",
        "AIMQ_UPLOADS_EXCHANGE": tag,
        "AIMQ_UPLOADS_QUEUE": tag,
        "AIMQ_UPLOADS_DEAD_LETTER_EXCHANGE": f"{tag}.dlx",
        "AIMQ_UPLOADS_DEAD_LETTER_QUEUE": f"{tag}.dlq",
    }


def remove_throwaway(settings: Any, work: Path, keep_folder: bool = False) -> None:
    """Every Redis key under the prefix (models, upload records, rate limits), the queues and
    exchanges, and the folder (unless ``keep_folder``: its logs and DAGSTER_HOME, to look at)."""
    from aimq_serving.uploads.broker import Topology, connect

    client = settings.redis_client()
    try:
        for key in client.scan_iter(match=f"{settings.redis_prefix}:*", count=1000):
            client.delete(key)
    finally:
        client.close()
    connection = connect(settings.rabbitmq_url.get_secret_value())
    try:
        Topology.from_settings(settings).delete(connection.channel())
    finally:
        connection.close()
    if not keep_folder:
        shutil.rmtree(work, ignore_errors=True)


def train_in_process(rows_per_group: int) -> None:
    """``train_models`` in this process, on an ephemeral Dagster instance, into the model store the
    environment names. Call it once ``throwaway_env`` is in ``os.environ``: the settings are read then."""
    import dagster as dg

    from aimq_pipelines.definitions import defs
    from aimq_pipelines.models.resources import ModelStoreResource, TrainingDataSource

    with dg.DagsterInstance.ephemeral() as instance:
        trained = defs.resolve_job_def("train_models").execute_in_process(
            instance=instance,
            resources={
                "model_store": ModelStoreResource(),
                "training_source": TrainingDataSource(rows_per_group=rows_per_group),
            },
        )
    if not trained.success:
        raise RuntimeError("train_models failed")
