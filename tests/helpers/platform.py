"""The platform as real processes for end-to-end tests: dagster-daemon, the API under uvicorn and,
on demand, dagster-webserver, all with the test session's settings and a queue of their own."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import dagster as dg
import httpx

from aimq_cli import local_platform
from aimq_serving.settings import AimqSettings
from tests.helpers.api_server import deployed_command, server_env
from tests.helpers.paths import REPO
from tests.helpers.ports import free_port

START_TIMEOUT_S = 120.0


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Platform:
    env: dict[str, str]
    log_dir: Path
    api_url: str
    dagster_url: str
    services: dict[str, Service] = field(default_factory=dict)
    code_server: local_platform.CodeServer | None = None

    def start(self, name: str, command: list[str]) -> Service:
        log = self.log_dir / f"{name}.log"
        with open(log, "wb") as out:
            # Own process group: stopping it stops the run subprocesses the daemon launched too.
            proc = subprocess.Popen(
                command, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        service = Service(name, proc, log)
        self.services[name] = service
        return service

    def wait_http(self, service: Service, url: str, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if service.proc.poll() is not None:
                raise RuntimeError(f"{service.name} exited with {service.proc.returncode}:\n{service.tail()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{service.name} did not answer {url} within {timeout_s:.0f} s:\n{service.tail()}")

    def start_api(self) -> None:
        port = int(self.api_url.rsplit(":", 1)[1])
        api = self.start("api", [*deployed_command(port), "--log-level", "warning"])
        self.wait_http(api, f"{self.api_url}/health")

    def workspace(self) -> Path:
        """The workspace naming the platform's code server, which this (re)starts when it is not
        running: the warm code server `aimq up` runs, which the daemon launches runs through.
        Restarted on the same port, so the workspace file stays right."""
        if self.code_server is None:
            self.code_server = local_platform.CodeServer(port=free_port())
            self.code_server.write_workspace(self.log_dir)
        service = self.services.get("code-server")
        if service is None or service.proc.poll() is not None:
            service = self.start("code-server", self.code_server.command())
            try:
                self.code_server.wait_loaded(service.proc, START_TIMEOUT_S)
            except local_platform.CodeServerFailed as exc:
                raise RuntimeError(f"{exc}:\n{service.tail()}") from exc
        return self.log_dir / "aimq-workspace.yaml"

    def start_daemon(self) -> None:
        self.start("dagster-daemon", local_platform.daemon_command(self.workspace()))

    def start_webserver(self) -> None:
        port = int(self.dagster_url.rsplit(":", 1)[1])
        web = self.start("dagster-webserver", local_platform.webserver_command(self.workspace(), "127.0.0.1", port))
        self.wait_http(web, f"{self.dagster_url}/server_info")

    def check_alive(self) -> None:
        for service in self.services.values():
            if service.proc.poll() is not None:
                raise RuntimeError(f"{service.name} exited with {service.proc.returncode}:\n{service.tail()}")

    def stop(self) -> None:
        for service in self.services.values():
            if service.proc.poll() is None:
                os.killpg(service.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for service in self.services.values():
            try:
                service.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(service.proc.pid, signal.SIGKILL)
                service.proc.wait()


def make_platform(settings: AimqSettings, overrides: Mapping[str, str], log_dir: Path) -> Platform:
    api_url = f"http://127.0.0.1:{free_port()}"
    dagster_url = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        **server_env(settings),
        "AIMQ_DAGSTER_UI_URL": dagster_url,
        **overrides,
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    return Platform(env=env, log_dir=log_dir, api_url=api_url, dagster_url=dagster_url)


class Alive(Protocol):
    def check_alive(self) -> None: ...


def wait_for_upload(api_url: str, upload_id: str, timeout_s: float = 240.0, platform: Alive | None = None) -> dict:
    """The upload's status once it is finished (succeeded or failed); while waiting, ``platform``
    (this module's Platform, or any set of processes that can say it is alive) raises if one died."""
    deadline = time.monotonic() + timeout_s
    record: dict = {}
    while time.monotonic() < deadline:
        if platform is not None:
            platform.check_alive()
        response = httpx.get(f"{api_url}/uploads/{upload_id}", timeout=5)
        if response.status_code == 200:
            record = response.json()
            if record["state"] in ("succeeded", "failed"):
                return record
        time.sleep(0.5)
    raise AssertionError(f"upload {upload_id} not finished within {timeout_s:.0f} s: {record}")


def finished_run(instance: dg.DagsterInstance, run_id: str, timeout_s: float = 60) -> dg.DagsterRun:
    """The run once it is finished, or as it is after ``timeout_s`` (the caller checks its status): the
    upload is marked succeeded when its result is in place, a moment before its run ends."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def prediction_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as read back from a result file -> the JSON records /predict takes (the integer fields
    as ints: a CSV or a workbook may have given them as text or floats)."""
    from aimq_serving import schema

    body = []
    for record in records:
        row = {}
        for key in schema.INPUT_COLUMNS:
            value = record[key]
            if key == "model" or key in schema.NUMERIC_BY_NAME:
                value = int(float(value))
            row[key] = value
        body.append(row)
    return body
