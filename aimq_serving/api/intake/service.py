"""The upload flow of the API: receive -> publish (confirmed) -> move into place -> register, or roll back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from aimq_serving.api.intake.receive import FRAMING_ALLOWANCE, receive
from aimq_serving.uploads.broker import BrokerUnavailable, UploadPublisher
from aimq_serving.uploads.messages import UploadMessage
from aimq_serving.uploads.status import StatusUnavailable, UploadStatusStore, utc_now
from aimq_serving.uploads.storage import UploadStorage, new_upload_id

log = logging.getLogger(__name__)


class UploadNotQueued(Exception):
    """The broker did not confirm the message; the stored file was removed again (503)."""


@dataclass
class UploadServices:
    storage: UploadStorage
    status: UploadStatusStore
    publisher: UploadPublisher
    max_bytes: int
    confirm_timeout_s: float
    dagster_ui_url: str

    @classmethod
    def from_settings(cls, settings: Any) -> UploadServices:
        # Nothing connects here: the API starts (and serves predictions) while the broker is down.
        return cls(
            storage=UploadStorage(settings.resolved_upload_dir),
            status=UploadStatusStore.from_settings(settings),
            publisher=UploadPublisher.from_settings(settings),
            max_bytes=settings.max_upload_bytes,
            confirm_timeout_s=settings.broker_confirm_timeout_s,
            dagster_ui_url=settings.dagster_ui_url.rstrip("/"),
        )

    @staticmethod
    def body_limit(settings: Any) -> int:
        """The request-body limit of the upload route: the file limit plus multipart framing."""
        return settings.max_upload_bytes + FRAMING_ALLOWANCE

    def close(self) -> None:
        self.publisher.close()
        self.status.client.close()

    def run_url(self, run_id: str | None) -> str | None:
        return f"{self.dagster_ui_url}/runs/{run_id}" if run_id else None

    async def accept(self, chunks: AsyncIterator[bytes], content_type: str | None) -> UploadMessage:
        """Store the upload and queue it; returns its message once the broker confirmed it.

        Order matters. The body stays in ``incoming/`` until the broker confirmed its message;
        only then is it moved into place and the status record written, and then 202 returned.
        So a stored input always has its message, and a process killed at any step leaves at most
        an incoming body: complete and queued (the scoring run moves it into place itself), or
        never queued (the sensor removes it after ``upload_abandoned_after_s``). If the broker
        does not confirm, the body is deleted and nothing refers to the upload (503). If Redis
        fails after the confirm, the upload is still queued and the run creates its record.
        """
        upload_id = new_upload_id()
        received = await receive(chunks, content_type, self.storage.incoming_path(upload_id), self.max_bytes)
        message = UploadMessage(
            upload_id=upload_id,
            format=received.format,
            sha256=received.sha256,
            size=received.size,
            original_name=received.original_name,
            created_at=utc_now(),
        )
        try:
            # The publisher bounds its own wait (heartbeat, blocked-connection timeout); this is
            # the request's hard limit on top, so a client never hangs on a silent broker.
            await asyncio.wait_for(run_in_threadpool(self.publisher.publish, message), self.confirm_timeout_s * 2)
        except (TimeoutError, BrokerUnavailable) as exc:
            await run_in_threadpool(self.storage.delete, upload_id)
            reason = str(exc) or "the message broker did not confirm in time"
            log.warning("upload %s not queued, file removed: %s", upload_id, reason)
            raise UploadNotQueued(reason) from exc
        try:
            await run_in_threadpool(self.storage.commit_incoming, upload_id, received.format)
        except OSError:
            # Its message is out: without the file its run ends as a withdrawn upload.
            await run_in_threadpool(self.storage.delete, upload_id)
            raise
        try:
            await run_in_threadpool(self.status.register, message)
        except StatusUnavailable as exc:
            log.warning("upload %s queued, status not recorded yet (the run will): %s", upload_id, exc)
        return message
