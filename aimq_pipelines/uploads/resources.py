"""The uploads resource: storage, status records and the broker topology of batch scoring."""

from __future__ import annotations

import dagster as dg
import pika

from aimq_serving.settings import AimqSettings, settings_with
from aimq_serving.uploads.broker import Topology, connect
from aimq_serving.uploads.status import UploadStatusStore
from aimq_serving.uploads.storage import UploadStorage


class UploadsResource(dg.ConfigurableResource):
    """Unset fields fall back to the AIMQ_* environment (AimqSettings), like the API's."""

    upload_dir: str | None = None
    redis_prefix: str | None = None
    upload_retention_days: float | None = None
    training_runs_kept: int | None = None
    uploads_exchange: str | None = None
    uploads_queue: str | None = None
    uploads_dead_letter_exchange: str | None = None
    uploads_dead_letter_queue: str | None = None
    sensor_batch_size: int | None = None
    sensor_tick_budget_s: float | None = None
    sensor_wait_s: float | None = None
    sensor_linger_s: float | None = None
    scoring_uploads_per_run: int | None = None

    def settings(self) -> AimqSettings:
        overrides = {k: v for k, v in self.model_dump().items() if v is not None}
        return settings_with(**overrides)

    def storage(self, settings: AimqSettings | None = None) -> UploadStorage:
        """``settings``: this resource's, when the caller has them already (read once per upload)."""
        return UploadStorage((settings or self.settings()).resolved_upload_dir)

    def status_store(self, settings: AimqSettings | None = None) -> UploadStatusStore:
        return UploadStatusStore.from_settings(settings or self.settings())

    def topology(self) -> Topology:
        return Topology.from_settings(self.settings())

    def connect(self) -> pika.BlockingConnection:
        settings = self.settings()
        return connect(settings.rabbitmq_url.get_secret_value(), timeout_s=settings.broker_confirm_timeout_s)
