"""What the app's lifespan owns: connections and caches, built once and shared by every request."""

from __future__ import annotations

from dataclasses import dataclass

from aimq_serving.model_store import ModelStore
from aimq_serving.predictor import ModelCache
from aimq_serving.settings import AimqSettings


@dataclass
class Services:
    settings: AimqSettings
    store: ModelStore
    models: ModelCache

    @classmethod
    def start(cls, settings: AimqSettings) -> "Services":
        store = ModelStore.from_settings(settings)
        models = ModelCache(store)
        models.refresh_all()  # warm: a missing model or a Redis outage is not fatal, /ready says so
        models.start()
        return cls(settings=settings, store=store, models=models)

    def close(self) -> None:
        self.models.stop()
        self.store.client.close()
