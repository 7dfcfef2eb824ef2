"""The local platform's Dagster processes, as `aimq up` starts them (and the tests and benchmarks
that run the platform as processes): one code server, ``aimq_pipelines.code_server``, whose runs
fork from a warm process, and the daemon and the webserver loading the code location from it.

One code server instead of one per Dagster process (what a ``python_module`` workspace gives):
the daemon launches every run through it, so every run starts warm, and the code location is
loaded once. It listens on localhost only, on a free port, whatever address the UI binds.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
LOCATION_NAME = "aimq"  # aimq_pipelines.code_server.LOCATION_NAME; not imported: it imports dagster
HOST = "127.0.0.1"


class CodeServerFailed(RuntimeError):
    """The code server exited or did not load the code location in time (the reason is the text)."""


def free_port(host: str = HOST) -> int:
    """A port nothing listens on, for a server about to start, below the kernel's ephemeral range.

    A port from that range (what binding port 0 gives) is also what the kernel hands out as the local
    end of outgoing connections: one made between this check and the server's bind takes it (seen:
    a webserver's port taken while the daemon connected to the code server)."""
    low = _ephemeral_range_start()
    below = range(max(1024, low - 12_000), low)
    for port in random.sample(below, min(200, len(below))):
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # all taken: any free port
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _ephemeral_range_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


@dataclass(frozen=True)
class CodeServer:
    port: int
    host: str = HOST

    def command(self) -> list[str]:
        return [sys.executable, "-m", "aimq_pipelines.code_server", "--host", self.host, "--port", str(self.port)]

    def write_workspace(self, directory: Path) -> Path:
        """A workspace file naming this server, for ``dagster-daemon run -w`` and the webserver."""
        path = directory / "aimq-workspace.yaml"
        location = {"grpc_server": {"host": self.host, "port": self.port, "location_name": LOCATION_NAME}}
        path.write_text(json.dumps({"load_from": [location]}, indent=2))  # JSON is YAML
        return path

    def wait_loaded(self, proc: subprocess.Popen, timeout_s: float) -> None:
        """Until the server has loaded the code location; raises with its reason otherwise."""
        from aimq_pipelines.code_server_check import location_error  # imports dagster: only when starting

        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise CodeServerFailed(f"the code server exited with code {proc.returncode} while starting")
            error = location_error(self.host, self.port)
            if error is None:
                return
            if time.monotonic() > deadline:
                raise CodeServerFailed(
                    f"the code server did not load the code location within {timeout_s:.0f} s: {error}"
                )
            time.sleep(0.5)


def daemon_command(workspace: Path) -> list[str]:
    return [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)]


def webserver_command(workspace: Path, host: str, port: int) -> list[str]:
    return [str(BIN / "dagster-webserver"), "-w", str(workspace), "-h", host, "-p", str(port)]
