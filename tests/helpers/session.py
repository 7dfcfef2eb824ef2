"""What every test session runs against: the machine's Redis and RabbitMQ (or those AIMQ_TEST_*
names), and how much data it trains its models on."""

from __future__ import annotations

import os

REDIS_URL = os.environ.get("AIMQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("AIMQ_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
# Small enough to train in a second, large enough for the quality checks to mean something.
TEST_ROWS_PER_GROUP = 5_000
