"""Private Redis and RabbitMQ servers for the fault tests, and the deployed RedisAI for the RedisAI
tests: real servers on free ports, in a temporary directory, that a test may kill and restart without
touching the shared services (6379, 5672).

Redis and RabbitMQ keep their data across a restart, as in production: Redis with an append-only
file, RabbitMQ with its Mnesia and message store directory (durable queues and persistent messages
survive). RedisAI, as deployed, does not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pika
import pika.exceptions
import redis

from tests.helpers import deployed_redis
from tests.helpers.ports import free_port

START_TIMEOUT_S = 60.0
# The Debian wrapper in /usr/sbin switches to the rabbitmq user (whose HOME holds the shared node's
# cookie); the script it wraps starts a node as the current user, which is what a private node needs.
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


class ServerError(RuntimeError):
    pass


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _Process:
    """One server process in its own process group (so a kill reaches every helper it started)."""

    name = "server"

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.dir,
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ready():
            if self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited with {self.proc.returncode}:\n{_log_tail(self.log)}")
            if time.monotonic() > deadline:
                self.kill()
                raise ServerError(f"{self.name} not ready within {START_TIMEOUT_S:.0f} s:\n{_log_tail(self.log)}")
            time.sleep(0.2)

    def kill(self, sig: signal.Signals = signal.SIGKILL, timeout_s: float = 30.0) -> None:
        """Send ``sig`` to the server's process group and wait until the server is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        try:  # helpers left in the group (RabbitMQ's port programs) go with it
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def restart(self, sig: signal.Signals = signal.SIGKILL) -> None:
        self.kill(sig)
        self.start()


class RedisServer(_Process):
    """``redis-server`` on a free port, persisting to an append-only file in its directory."""

    name = "redis"
    # Every write synced to the append-only file before it is answered.
    persistence: tuple[str, ...] = ("--appendonly", "yes", "--appendfsync", "always")

    def __init__(self, directory: Path):
        super().__init__(directory)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def binary(self) -> str:
        # The deployed Redis line (6.2), so a fault test proves what compose and k8s run.
        return str(deployed_redis.REDIS_SERVER)

    def modules(self) -> list[str]:
        """The ``--loadmodule`` arguments; none for a plain Redis."""
        return []

    def command(self) -> list[str]:
        return [
            self.binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            *self.persistence,
            "--daemonize",
            "no",
            *self.modules(),
        ]

    def ready(self) -> bool:
        try:
            with redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)


class RabbitServer(_Process):
    """A RabbitMQ node of its own (name, ports, Mnesia and logs in its directory, no plugins).

    It registers with the machine's epmd like any node; the Erlang cookie is the current user's.
    """

    name = "rabbitmq"

    def __init__(self, directory: Path):
        super().__init__(directory)
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"aimqtest-{uuid.uuid4().hex[:8]}@localhost"
        (self.dir / "enabled_plugins").write_text("[].\n")
        # Empty: the machine's /etc/rabbitmq/rabbitmq-env.conf names the shared node.
        (self.dir / "rabbitmq-env.conf").write_text("")
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def command(self) -> list[str]:
        if not RABBITMQ_SERVER.is_file():
            raise ServerError(f"{RABBITMQ_SERVER} is missing (scripts/ensure-services.sh --install)")
        return [str(RABBITMQ_SERVER)]

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def ready(self) -> bool:
        params = pika.URLParameters(self.url)
        params.socket_timeout = params.blocked_connection_timeout = 2
        params.connection_attempts = 1
        try:
            pika.BlockingConnection(params).close()
            return True
        except (pika.exceptions.AMQPError, OSError):
            return False


class RedisAIServer(RedisServer):
    """The deployed Redis (6.2.5 + RedisAI 1.2.7 on ONNX Runtime 1.11) on a free port, WITHOUT
    persistence (the image's default): a restart loses every key, AI models included. Needs the
    folder that scripts/redisai-test-server.sh unpacked (AIMQ_TEST_REDISAI_HOME, set by ./dev test)."""

    name = "redisai"
    persistence: tuple[str, ...] = ("--appendonly", "no")

    def __init__(self, directory: Path, home: Path):
        super().__init__(directory)
        self.home = home

    def binary(self) -> str:
        return str(self.home / "redis-6.2.5" / "bin" / "redis-server")

    def modules(self) -> list[str]:
        return [
            "--loadmodule",
            str(self.home / "redisai" / "redisai.so"),
            "BACKENDSPATH",
            str(self.home / "redisai" / "backends"),
            "INTRA_OP_PARALLELISM",
            "1",
            "INTER_OP_PARALLELISM",
            "1",
        ]
