"""What the app's lifespan owns: connections and caches, built once and shared by every request."""

from __future__ import annotations

from dataclasses import dataclass

from aimq_serving.api.intake.service import UploadServices
from aimq_serving.api.metrics import ApiMetrics
from aimq_serving.api.predictor import OnlinePredictor
from aimq_serving.api.ratelimit import RateLimiter
from aimq_serving.api.sklearn_batcher import SklearnBatcher
from aimq_serving.loaded_models import ModelCache
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings


@dataclass
class Services:
    settings: AimqSettings
    store: ModelStore
    models: ModelCache
    metrics: ApiMetrics
    predictor: OnlinePredictor
    sklearn: SklearnBatcher
    uploads: UploadServices
    limiter: RateLimiter | None = None

    @classmethod
    def start(cls, settings: AimqSettings, metrics: ApiMetrics, limiter: RateLimiter | None = None) -> Services:
        store = ModelStore.from_settings(settings)
        models = ModelCache(
            store,
            on_load=metrics.model_loaded,
            load_sklearn=settings.pickle_mode == "cached",
            redisai=settings.predict_backend == "redisai",
        )
        models.refresh_all()  # warm: a missing model or a Redis outage is not fatal, /ready says so
        models.start()
        sklearn = SklearnBatcher(settings.pickle_queue_rows)
        predictor = OnlinePredictor(settings, store, models, metrics, sklearn)
        return cls(
            settings=settings,
            store=store,
            models=models,
            metrics=metrics,
            predictor=predictor,
            sklearn=sklearn,
            limiter=limiter,
            uploads=UploadServices.from_settings(settings),
        )

    def close(self) -> None:
        self.uploads.close()
        self.models.stop()
        self.sklearn.close()
        self.store.client.close()

    async def aclose(self) -> None:
        if self.limiter is not None:
            await self.limiter.aclose()
        self.close()
