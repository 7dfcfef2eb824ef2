"""Dagster resources: the model store and the training-data source."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import dagster as dg
import pandas as pd

from aimq_pipelines.models.synthetic import generate_listings
from aimq_serving.loaded_models import ModelCache
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings, settings_with


class ModelStoreResource(dg.ConfigurableResource):
    """The Redis model store. Unset fields fall back to the AIMQ_* environment (AimqSettings)."""

    redis_url: str | None = None
    prefix: str | None = None
    keep_versions: int | None = None

    def settings(self) -> AimqSettings:
        overrides = {
            k: v
            for k, v in {
                "redis_url": self.redis_url,
                "redis_prefix": self.prefix,
                "keep_versions": self.keep_versions,
            }.items()
            if v is not None
        }
        return settings_with(**overrides)

    def store(self) -> ModelStore:
        return ModelStore.from_settings(self.settings())

    def model_cache(self) -> ModelCache:
        """This process's cache of the store's models (one per store: Redis, prefix, signing key).

        A backlog run scores each of its uploads in a step of its own, in one process: each step
        pins the current version of every group (``PinnedModels.from_cache``: two Redis reads per
        group), and loads a version only the first time it meets it. Loading the three models
        (signature checked, ONNX sessions built) cost ~50 ms, a sixth of a small upload's step
        (docs/batch.md, "Many small files"). A run process starts with an empty cache: it is forked
        from a process that never made one (aimq_pipelines/code_server.py)."""
        settings = self.settings()
        key = (settings.redis_url, settings.redis_prefix, settings.resolved_signing_key(), settings.keep_versions)
        with _CACHES_LOCK:
            cache = _CACHES.pop(key, None)
            if cache is None:
                cache = ModelCache(ModelStore.from_settings(settings))
            _CACHES[key] = cache  # the most recently used last
            while len(_CACHES) > _CACHES_KEPT:
                _CACHES.popitem(last=False)
            return cache


# The caches of model_cache. A run uses one store; more are kept only where one process runs many
# stores' jobs (the tests), and the oldest are dropped so their models do not pile up.
_CACHES: OrderedDict[tuple[str, str, bytes, int], ModelCache] = OrderedDict()
_CACHES_LOCK = threading.Lock()
_CACHES_KEPT = 4


class TrainingDataSource(dg.ConfigurableResource):
    """Where training data comes from: the seeded generator, or the user's CSV files.

    With ``csv_dir`` set, the folder must hold ``A.csv``, ``B.csv`` and ``C.csv`` with the sample
    files' columns plus ``price_in_local_currency``.
    """

    rows_per_group: int = 100_000
    seed: int = 0
    csv_dir: str | None = None

    def describe(self, group: str) -> str:
        if self.csv_dir:
            return str(self.csv_path(group))
        return f"generated: {self.rows_per_group} rows, seed {self.seed}"

    def csv_path(self, group: str) -> Path:
        return Path(self.csv_dir or ".") / f"{group}.csv"

    def load(self, group: str) -> pd.DataFrame:
        if not self.csv_dir:
            return generate_listings(group, self.rows_per_group, self.seed)
        path = self.csv_path(group)
        if not path.is_file():
            raise dg.Failure(
                description=f"training data for group {group} not found: {path}",
                metadata={"csv_dir": self.csv_dir, "expected_file": str(path)},
            )
        # dtype=str keeps bad cells as they were written, so validation can report them verbatim.
        return pd.read_csv(path, dtype=str, keep_default_na=False)
