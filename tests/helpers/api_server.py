"""The API as a real server process for tests and benchmarks: uvicorn on a free port with the given
settings as its environment, stopped with all its workers afterwards; and distinct records to send it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from aimq_serving.settings import AimqSettings
from tests.helpers.paths import REPO
from tests.helpers.ports import free_port


def server_env(settings: AimqSettings) -> dict[str, str]:
    """``settings`` as the AIMQ_* environment of a server process: a variable for every field that is set."""
    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[f"AIMQ_{name.upper()}"] = str(value)
    return env


def deployed_command(port: int) -> list[str]:
    """The API's command line as ``aimq up``, the compose file and the Kubernetes manifests run it, on
    127.0.0.1:``port`` (one worker)."""
    return [
        str(Path(sys.executable).parent / "uvicorn"),
        "--factory",
        "aimq_serving.api.app:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


@contextmanager
def uvicorn_server(
    env: Mapping[str, str],
    workers: int = 2,
    ready_timeout_s: float = 90.0,
    log_path: Path | None = None,
    deployed: bool = False,
    cwd: Path = REPO,
) -> Iterator[str]:
    """A real server (``python -m aimq_serving.api --workers N``: uvicorn, and with several workers
    Prometheus' multiprocess directory) on a free port; yields its URL once /ready answers 200, stops
    it and its workers afterwards. Its output goes to ``log_path`` when given (kept), else to a
    temporary file shown only if it fails to start.

    ``deployed``: the command line ``aimq up``, the compose file and the Kubernetes manifests run
    (``uvicorn --factory aimq_serving.api.app:create_app --host --port``, with ``--workers N`` and
    an empty PROMETHEUS_MULTIPROC_DIR as docs/api.md says when N > 1). ``cwd``: the checkout whose
    code it serves (uvicorn and ``python -m`` import from the working directory first).

    A server that does not stop within 15 s of SIGTERM is killed and the block fails (unless it is
    already failing): a worker whose event loop is stuck answers no request and never shuts down,
    and new connections, all accepted by the other workers, would not show it."""
    port = free_port()
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(log_path, "w+b") if log_path is not None else tempfile.TemporaryFile() as log,
        tempfile.TemporaryDirectory(prefix="aimq-metrics-") as metrics_dir,
    ):
        full_env = {**os.environ, **env, "AIMQ_API_HOST": "127.0.0.1", "AIMQ_API_PORT": str(port)}
        full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if not deployed:
            cmd = [sys.executable, "-m", "aimq_serving.api", "--workers", str(workers)]
        else:
            cmd = deployed_command(port)
            if workers > 1:
                cmd += ["--workers", str(workers)]
                full_env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        proc = subprocess.Popen(
            cmd, env=full_env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(proc, url, ready_timeout_s, log)
            yield url
        except BaseException:
            _stop(proc)
            raise
        if not _stop(proc):
            log.seek(0)
            tail = log.read().decode(errors="replace")[-4000:]
            raise RuntimeError(f"uvicorn at {url} did not stop within 15 s of SIGTERM and was killed:\n{tail}")


def _wait_ready(proc: subprocess.Popen, url: str, timeout_s: float, log) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"uvicorn exited with {proc.returncode}:\n{log.read().decode(errors='replace')}")
        try:
            response = httpx.get(f"{url}/ready", timeout=2)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.2)
    log.seek(0)
    raise RuntimeError(
        f"uvicorn at {url} not ready after {timeout_s} s ({last}):\n{log.read().decode(errors='replace')}"
    )


def _stop(proc: subprocess.Popen) -> bool:
    """Stop the server and its workers; False if it had to be killed."""
    graceful = True
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            graceful = False
    # The parent may have left a worker behind; the whole process group goes.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    return graceful


def distinct_records(sample_records: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``n`` different records: the sample rows with mileage and age varied."""
    out = []
    for i in range(n):
        base = sample_records[i % len(sample_records)]
        out.append(
            {**base, "kilometers": base["kilometers"] + 997 * i, "age_in_months": (base["age_in_months"] + 7 * i) % 240}
        )
    return out
