"""The uploads topology and the confirmed publisher, against the real RabbitMQ."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime

import pika
import pytest
from pydantic import SecretStr

from aimq_serving.settings import AimqSettings
from aimq_serving.uploads.broker import ERROR_HEADER, BrokerUnavailable, Topology, UploadPublisher, connect, dead_letter
from aimq_serving.uploads.messages import UploadMessage
from aimq_serving.uploads.storage import new_upload_id


def message() -> UploadMessage:
    upload_id = new_upload_id()
    return UploadMessage(
        upload_id=upload_id,
        format="csv",
        sha256="b" * 64,
        size=3,
        original_name="x.csv",
        created_at=datetime.now(UTC),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_publish_is_confirmed_persistent_and_topology_idempotent(uploads_settings: AimqSettings) -> None:
    topology = Topology.from_settings(uploads_settings)
    publisher = UploadPublisher.from_settings(uploads_settings)
    msg = message()
    try:
        publisher.publish(msg)
        publisher.publish(msg)  # the same connection, reused
    finally:
        publisher.close()
    connection = connect(uploads_settings.rabbitmq_url.get_secret_value())
    try:
        channel = connection.channel()
        topology.declare(channel)  # declaring again with the same arguments is a no-op
        method, properties, body = channel.basic_get(topology.queue, auto_ack=True)
        assert UploadMessage.parse(body) == msg
        assert properties.delivery_mode == 2 and properties.message_id == msg.upload_id
        assert properties.content_type == "application/json"
        assert channel.queue_declare(topology.queue, passive=True).method.message_count == 1
        # The queue names its dead-letter exchange: a consumer's reject ends up there too.
        method, _, _ = channel.basic_get(topology.queue, auto_ack=False)
        channel.basic_reject(method.delivery_tag, requeue=False)
        for _ in range(50):
            if channel.queue_declare(topology.dead_letter_queue, passive=True).method.message_count == 1:
                break
            time.sleep(0.05)
        assert channel.queue_declare(topology.dead_letter_queue, passive=True).method.message_count == 1
    finally:
        connection.close()


def test_dead_letter_carries_the_reason(uploads_settings: AimqSettings) -> None:
    topology = Topology.from_settings(uploads_settings)
    connection = connect(uploads_settings.rabbitmq_url.get_secret_value())
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        topology.declare(channel)
        props = pika.BasicProperties(content_type="application/json", headers={"kept": "yes"})
        dead_letter(channel, topology, b"{broken", props, "body is not valid JSON")
        _, properties, body = channel.basic_get(topology.dead_letter_queue, auto_ack=True)
        assert body == b"{broken"
        assert properties.headers[ERROR_HEADER] == "body is not valid JSON"
        assert properties.headers["kept"] == "yes" and properties.delivery_mode == 2
    finally:
        connection.close()


def test_broker_down_is_reported_quickly(uploads_settings: AimqSettings) -> None:
    down = uploads_settings.model_copy(
        update={
            "rabbitmq_url": SecretStr(f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"),
            "broker_confirm_timeout_s": 1.0,
        }
    )
    publisher = UploadPublisher.from_settings(down)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="message broker unavailable"):
        publisher.publish(message())
    assert time.monotonic() - started < 10
    with pytest.raises(BrokerUnavailable):
        publisher.check()


def test_publisher_reconnects_after_the_broker_closed_its_connection(uploads_settings: AimqSettings) -> None:
    publisher = UploadPublisher.from_settings(uploads_settings)
    try:
        publisher.publish(message())
        assert publisher._connection is not None
        # What a broker restart or an idle timeout does to the connection.
        publisher._connection.close()
        publisher.publish(message())
    finally:
        publisher.close()
    connection = connect(uploads_settings.rabbitmq_url.get_secret_value())
    try:
        count = connection.channel().queue_declare(uploads_settings.uploads_queue, passive=True).method.message_count
        assert count == 2
    finally:
        connection.close()
