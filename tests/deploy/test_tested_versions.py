"""The versions the suite claims to prove (docs/deploy.md, "Tested Redis and RedisAI versions"): the
Redis line compose and Kubernetes deploy, 6.2, for the suite and the fault tests' private servers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from tests.helpers import deployed_redis
from tests.helpers.servers import RedisServer
from tests.helpers.session import REDIS_URL

# docker-compose.yml and k8s/ deploy redislabs/redisai:1.2.7-cpu-bionic: Redis 6.2.5.
DEPLOYED_LINE = "6.2."


def test_the_registry_redis_is_the_deployed_line() -> None:
    assert deployed_redis.VERSION.startswith(DEPLOYED_LINE), deployed_redis.VERSION


@pytest.mark.skipif(
    os.environ.get("AIMQ_TEST_REDIS_IS_DEPLOYED_LINE") != "1",
    reason=f"the suite runs on the Redis that AIMQ_TEST_REDIS_URL names ({REDIS_URL}), not the one ./dev test starts",
)
def test_the_suite_runs_on_redis_6_2_without_modules(redis_client: redis.Redis) -> None:
    assert redis_client.info("server")["redis_version"] == deployed_redis.VERSION
    assert redis_client.execute_command("MODULE", "LIST") == []


def test_the_fault_tests_private_redis_is_6_2(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        with server.client() as client:
            assert client.info("server")["redis_version"] == deployed_redis.VERSION
    finally:
        server.kill()
