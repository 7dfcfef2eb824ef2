"""RabbitMQ: the uploads topology, a publisher with confirms, and dead-lettering with a reason.

Topology (declared idempotently by every publisher and by the sensor, so whichever starts first
creates it and a missing queue never loses a message):

- exchange ``uploads_exchange`` (direct, durable)
  -> queue ``uploads_queue`` (durable, classic; routing key = the queue name)
- exchange ``uploads_dead_letter_exchange`` (direct, durable)
  -> queue ``uploads_dead_letter_queue`` (durable; routing key = the uploads queue name)

The uploads queue names the dead-letter exchange (``x-dead-letter-exchange``), so a message
rejected by any consumer ends there too. The sensor dead-letters an invalid message by publishing
a copy with an ``x-aimq-error`` header (the reason) to the dead-letter exchange, waiting for the
confirm, and only then acknowledging the original: the reason travels with the message, and a
crash in between leaves the original in the queue rather than losing it.

Classic, not quorum, queue: the sensor deliberately lets messages be redelivered (see
``aimq_pipelines/uploads/sensors.py``), and a quorum queue's delivery limit would dead-letter them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from aimq_serving.uploads.messages import UploadMessage

log = logging.getLogger(__name__)

ERROR_HEADER = "x-aimq-error"


class BrokerUnavailable(Exception):
    """The broker could not be reached or did not confirm the message; transient."""


@dataclass(frozen=True)
class Topology:
    exchange: str
    queue: str
    dead_letter_exchange: str
    dead_letter_queue: str

    @classmethod
    def from_settings(cls, settings: Any) -> Topology:
        return cls(
            exchange=settings.uploads_exchange,
            queue=settings.uploads_queue,
            dead_letter_exchange=settings.uploads_dead_letter_exchange,
            dead_letter_queue=settings.uploads_dead_letter_queue,
        )

    def declare(self, channel: BlockingChannel) -> None:
        channel.exchange_declare(self.dead_letter_exchange, exchange_type="direct", durable=True)
        channel.queue_declare(self.dead_letter_queue, durable=True, arguments={"x-queue-type": "classic"})
        channel.queue_bind(self.dead_letter_queue, self.dead_letter_exchange, routing_key=self.queue)
        channel.exchange_declare(self.exchange, exchange_type="direct", durable=True)
        channel.queue_declare(
            self.queue,
            durable=True,
            arguments={
                "x-queue-type": "classic",
                "x-dead-letter-exchange": self.dead_letter_exchange,
                "x-dead-letter-routing-key": self.queue,
            },
        )
        channel.queue_bind(self.queue, self.exchange, routing_key=self.queue)

    def delete(self, channel: BlockingChannel) -> None:
        """Remove every entity (tests)."""
        channel.queue_delete(self.queue)
        channel.queue_delete(self.dead_letter_queue)
        channel.exchange_delete(self.exchange)
        channel.exchange_delete(self.dead_letter_exchange)


def connection_parameters(url: str, *, timeout_s: float) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.socket_timeout = timeout_s
    params.stack_timeout = timeout_s * 2
    # A blocking publish waits for its confirm with no timeout of its own: a broker that blocks
    # publishers (memory or disk alarm) is cut off after this long, a silent one by the heartbeat.
    params.blocked_connection_timeout = timeout_s
    params.heartbeat = max(2, math.ceil(timeout_s))
    params.connection_attempts = 1
    params.client_properties = {"connection_name": "aimq"}
    return params


def connect(url: str, *, timeout_s: float = 5.0) -> pika.BlockingConnection:
    try:
        return pika.BlockingConnection(connection_parameters(url, timeout_s=timeout_s))
    except pika.exceptions.AMQPError as exc:
        raise BrokerUnavailable(f"message broker unavailable: {exc!r}") from exc


def message_properties(message: UploadMessage) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=message.upload_id,
        timestamp=int(message.created_at.timestamp()),
        type="aimq.upload.stored",
    )


class UploadPublisher:
    """Publishes upload messages and returns only once the broker confirmed them.

    One connection, shared by the API's worker threads under a lock (a pika connection is not
    thread-safe; a confirm round-trip is about a millisecond, so the lock is never the
    bottleneck). A dropped connection is reopened once per publish; publishing a message twice
    after a lost confirm is harmless, the sensor runs one job per upload id.
    """

    def __init__(self, url: str, topology: Topology, *, timeout_s: float = 5.0):
        self._url = url
        self._topology = topology
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> UploadPublisher:
        return cls(
            settings.rabbitmq_url.get_secret_value(),
            Topology.from_settings(settings),
            timeout_s=settings.broker_confirm_timeout_s,
        )

    def publish(self, message: UploadMessage) -> None:
        """Publish persistently; raise BrokerUnavailable unless the broker confirmed it."""
        if not self._lock.acquire(timeout=self._timeout_s):
            raise BrokerUnavailable("message broker is not answering (an earlier publish is still waiting)")
        try:
            for attempt in (1, 2):
                try:
                    channel = self._ensure_channel()
                    channel.basic_publish(
                        self._topology.exchange,
                        self._topology.queue,
                        message.to_json(),
                        properties=message_properties(message),
                        mandatory=True,
                    )
                    return
                except pika.exceptions.UnroutableError as exc:
                    self._reset()
                    raise BrokerUnavailable(f"message was not routed to queue {self._topology.queue!r}") from exc
                except pika.exceptions.NackError as exc:
                    self._reset()
                    raise BrokerUnavailable("the broker refused the message (nack)") from exc
                except (pika.exceptions.AMQPError, OSError) as exc:
                    self._reset()
                    if attempt == 2:
                        raise BrokerUnavailable(f"message broker unavailable: {exc!r}") from exc
                    log.info("broker connection lost (%r); reconnecting once", exc)
        finally:
            self._lock.release()

    def check(self) -> None:
        """Raise BrokerUnavailable if the broker cannot be reached now (readiness)."""
        with self._lock:
            try:
                self._ensure_channel()
                assert self._connection is not None
                self._connection.process_data_events(0)
            except (pika.exceptions.AMQPError, OSError) as exc:
                self._reset()
                raise BrokerUnavailable(f"message broker unavailable: {exc!r}") from exc

    def _ensure_channel(self) -> BlockingChannel:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self._reset()
        started = time.monotonic()
        self._connection = connect(self._url, timeout_s=self._timeout_s)
        channel = self._connection.channel()
        channel.confirm_delivery()
        self._topology.declare(channel)
        self._channel = channel
        log.info("connected to the message broker in %.3fs", time.monotonic() - started)
        return channel

    def _reset(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # closing a broken connection can fail in many ways; it is gone either way
                log.debug("closing the broker connection failed", exc_info=True)

    def close(self) -> None:
        with self._lock:
            self._reset()


def dead_letter(
    channel: BlockingChannel,
    topology: Topology,
    body: bytes,
    properties: pika.BasicProperties | None,
    reason: str,
) -> None:
    """Publish a copy of ``body`` with the reason to the dead-letter exchange (confirmed).

    The channel must be in confirm mode; raises if the broker does not take the copy, so the
    caller leaves the original unacknowledged.
    """
    headers = dict((properties.headers or {}) if properties else {})
    headers[ERROR_HEADER] = reason[:2000]
    headers["x-aimq-dead-lettered-at"] = int(time.time())
    channel.basic_publish(
        topology.dead_letter_exchange,
        topology.queue,
        body,
        properties=pika.BasicProperties(
            content_type=properties.content_type if properties else None,
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=properties.message_id if properties else None,
            headers=headers,
        ),
        mandatory=True,
    )
