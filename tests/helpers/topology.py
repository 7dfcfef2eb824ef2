"""Batch-scoring queues of a test's own on the session's RabbitMQ: settings that name a fresh
exchange, queue and dead-letter pair (and an upload folder), their deletion, and what a queue holds."""

from __future__ import annotations

import uuid
from pathlib import Path

from pydantic import SecretStr

from aimq_serving.settings import AimqSettings
from aimq_serving.uploads.broker import Topology, connect
from aimq_serving.uploads.messages import UploadMessage
from tests.helpers.session import RABBITMQ_URL


def unique_topology_settings(settings: AimqSettings, run_id: str, upload_dir: Path) -> AimqSettings:
    name = f"aimqtest-{run_id}-{uuid.uuid4().hex[:8]}"
    return settings.model_copy(
        update={
            "rabbitmq_url": SecretStr(RABBITMQ_URL),
            "uploads_exchange": name,
            "uploads_queue": name,
            "uploads_dead_letter_exchange": f"{name}.dlx",
            "uploads_dead_letter_queue": f"{name}.dlq",
            "upload_dir": upload_dir,
        }
    )


def delete_topology(settings: AimqSettings) -> None:
    connection = connect(settings.rabbitmq_url.get_secret_value())
    try:
        Topology.from_settings(settings).delete(connection.channel())
    finally:
        connection.close()


def queued_bodies(settings: AimqSettings) -> list[bytes]:
    """Every message body on the settings' queue, taken off it (the topology declared first)."""
    connection = connect(settings.rabbitmq_url.get_secret_value())
    try:
        channel = connection.channel()
        Topology.from_settings(settings).declare(channel)
        out = []
        while True:
            method, _, body = channel.basic_get(settings.uploads_queue, auto_ack=True)
            if method is None:
                return out
            out.append(body)
    finally:
        connection.close()


def queued(settings: AimqSettings) -> list[UploadMessage]:
    """Every message on the settings' queue, parsed, taken off it."""
    return [UploadMessage.parse(body) for body in queued_bodies(settings)]
