"""`DAGSTER_HOME=$PWD dagster dev` from the repository root, as the README says, is a working platform:
it reads the root dagster.yaml, loads the `aimq` code location, trains the models from a launch in
the webserver, and its daemon's upload sensor scores an upload the API queued. What it writes into
the checkout is git-ignored.

It runs in a copy of the working tree's files (tracked and untracked, not ignored: what a clone with
the current changes holds, without .venv or .env) with the venv's `dagster`, and Redis keys,
RabbitMQ queues, data and upload folders of its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from dagster_graphql import DagsterGraphQLClient

from aimq_serving.settings import AimqSettings
from tests.helpers.api_server import server_env, uvicorn_server
from tests.helpers.paths import REPO, SAMPLES
from tests.helpers.platform import wait_for_upload
from tests.helpers.ports import free_port
from tests.helpers.redis_keys import clear_prefix
from tests.helpers.topology import delete_topology, unique_topology_settings

LOCATION = "aimq"
REPOSITORY = "__repository__"  # what a Definitions object's repository is called
# Bounds for 2 busy cores: generous, since a hang is what they catch, not slowness.
START_TIMEOUT_S = 300.0
TRAIN_TIMEOUT_S = 600.0
UPLOAD_TIMEOUT_S = 300.0
# dagster dev gives its webserver and daemon 60 s each to stop before it kills them.
STOP_TIMEOUT_S = 150.0

WORKSPACE_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { repositories { name jobs { name } } }
          ... on PythonError { message }
        }
      }
    }
    ... on PythonError { message }
  }
  instance { runQueueConfig { maxConcurrentRuns } }
}
"""

SENSORS_QUERY = """
query Sensors($selector: RepositorySelector!) {
  sensorsOrError(repositorySelector: $selector) {
    __typename
    ... on Sensors { results { name sensorState { status } } }
    ... on PythonError { message }
  }
}
"""


def test_dagster_dev_reads_workspace_yaml_the_one_source_of_the_code_location() -> None:
    """`dagster dev` without -w reads a [tool.dagster] block in pyproject.toml before workspace.yaml;
    `dagster-webserver`, `dagster-daemon` and `dagster job launch` read workspace.yaml. So pyproject.toml
    has none, and every command loads the location from workspace.yaml."""
    assert "dagster" not in tomllib.loads((REPO / "pyproject.toml").read_text()).get("tool", {})
    (entry,) = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"]
    assert entry["python_module"] == {"module_name": "aimq_pipelines.definitions", "location_name": LOCATION}


def copy_working_tree(target: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    for name in dict.fromkeys(listed.decode().split("\0")):
        source = REPO / name
        # A tracked file another change deleted from the working tree is not in the copy either.
        if not name or not (source.is_file() or source.is_symlink()):
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name, follow_symlinks=False)


def untracked(checkout: Path) -> set[str]:
    """Files git would offer to add: neither ignored nor (the copy has no commits) anything else."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--others", "--exclude-standard"], cwd=checkout, capture_output=True, check=True
    ).stdout
    return set(filter(None, listed.decode().split("\0")))


@dataclass(frozen=True)
class Checkout:
    root: Path
    # What git offered to add before dagster dev ran: the copied files.
    untracked_at_start: frozenset[str]


@dataclass
class DagsterDev:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"dagster dev exited with {self.proc.returncode}:\n{self.tail()}")

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body
        return body["data"]

    def stop(self) -> None:
        """SIGTERM to its process group (dagster dev, its webserver, daemon, code servers and runs),
        as a terminal's Ctrl-C would; SIGKILL to what is left after STOP_TIMEOUT_S."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def _default_sigint() -> None:
    # dagster dev turns SIGTERM into whatever SIGINT does; a pytest started in the background of a
    # shell inherits SIGINT ignored, and dagster dev would then ignore SIGTERM too.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def own_settings(
    settings: AimqSettings, run_id: str, tmp_path: Path, redis_client: redis.Redis
) -> Iterator[AimqSettings]:
    """The session's settings (signing key, 5,000 training rows per group) with a Redis prefix, queues,
    data and upload folders of this test's own: its models do not replace the session's."""
    own = unique_topology_settings(settings, run_id, tmp_path / "uploads").model_copy(
        update={"redis_prefix": f"{settings.redis_prefix}-dev-{uuid.uuid4().hex[:8]}", "data_dir": tmp_path / "data"}
    )
    try:
        yield own
    finally:
        delete_topology(own)
        clear_prefix(redis_client, own.redis_prefix)


@pytest.fixture
def checkout(tmp_path: Path) -> Checkout:
    root = tmp_path / "checkout"
    root.mkdir()
    copy_working_tree(root)
    # A repository of its own, so `git ls-files --others` there says what dagster dev leaves unignored.
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return Checkout(root, frozenset(untracked(root)))


@pytest.fixture
def dagster_dev(checkout: Checkout, own_settings: AimqSettings, tmp_path: Path) -> Iterator[DagsterDev]:
    port = free_port()
    env = {
        **os.environ,
        **server_env(own_settings),
        "AIMQ_DAGSTER_UI_URL": f"http://127.0.0.1:{port}",
        "DAGSTER_HOME": str(checkout.root),
    }
    log = tmp_path / "dagster-dev.log"
    with open(log, "wb") as out:
        # Own process group: stopping it stops everything dagster dev started, runs included.
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster")), "dev", "-h", "127.0.0.1", "-p", str(port)],
            cwd=checkout.root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_default_sigint,
        )
    running = DagsterDev(proc, port, log)
    try:
        yield running
    finally:
        running.stop()


def wait_loaded(dev: DagsterDev) -> dict[str, Any]:
    """The workspace query's answer once the webserver answers and no location is still loading."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last: Any = None
    while time.monotonic() < deadline:
        dev.check_alive()
        try:
            data = dev.graphql(WORKSPACE_QUERY)
        except httpx.HTTPError as exc:
            last = exc
        else:
            last = data
            workspace = data["workspaceOrError"]
            entries = workspace.get("locationEntries")
            if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
                return data
        time.sleep(1)
    raise AssertionError(f"dagster dev did not load its workspace within {START_TIMEOUT_S:.0f} s: {last}\n{dev.tail()}")


def wait_run(dev: DagsterDev, client: DagsterGraphQLClient, run_id: str, timeout_s: float) -> str:
    """The run's final status, as the webserver reports it."""
    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        dev.check_alive()
        status = client.get_run_status(run_id).value
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(2)
    raise AssertionError(f"run {run_id} still {status} after {timeout_s:.0f} s:\n{dev.tail()}")


@pytest.mark.slow
@pytest.mark.timeout(START_TIMEOUT_S + TRAIN_TIMEOUT_S + 2 * UPLOAD_TIMEOUT_S + STOP_TIMEOUT_S)
def test_dagster_dev_from_the_root_trains_and_scores_an_upload(
    checkout: Checkout, own_settings: AimqSettings, dagster_dev: DagsterDev, tmp_path: Path
) -> None:
    data = wait_loaded(dagster_dev)
    (entry,) = data["workspaceOrError"]["locationEntries"]
    assert entry["name"] == LOCATION, entry
    location = entry["locationOrLoadError"]
    assert location["__typename"] == "RepositoryLocation", location
    (repository,) = location["repositories"]
    assert repository["name"] == REPOSITORY
    assert {"train_models", "score_upload", "score_uploads"} <= {job["name"] for job in repository["jobs"]}
    # The instance is the root dagster.yaml's: its run queue, not Dagster's default one.
    root_instance = yaml.safe_load((checkout.root / "dagster.yaml").read_text())
    assert (
        data["instance"]["runQueueConfig"]["maxConcurrentRuns"]
        == root_instance["run_coordinator"]["config"]["max_concurrent_runs"]
    )
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
    sensors = dagster_dev.graphql(SENSORS_QUERY, {"selector": selector})["sensorsOrError"]
    assert sensors["__typename"] == "Sensors", sensors
    # Running by default (DefaultSensorStatus.RUNNING): nobody has to switch it on in the UI.
    assert {s["name"]: s["sensorState"]["status"] for s in sensors["results"]}["upload_sensor"] == "RUNNING"

    # Launched through the webserver, as the UI's Launchpad does: the daemon's run queue starts it.
    client = DagsterGraphQLClient("127.0.0.1", port_number=dagster_dev.port, timeout=60)
    train_run = client.submit_job_execution(
        "train_models", repository_location_name=LOCATION, repository_name=REPOSITORY
    )
    assert wait_run(dagster_dev, client, train_run, TRAIN_TIMEOUT_S) == "SUCCESS", dagster_dev.tail()

    # The API over the same settings; /ready (which uvicorn_server waits for) needs every group's model.
    with uvicorn_server(
        {**server_env(own_settings), "AIMQ_DAGSTER_UI_URL": dagster_dev.url},
        workers=1,
        deployed=True,
        cwd=checkout.root,
        log_path=tmp_path / "api.log",
        ready_timeout_s=START_TIMEOUT_S,
    ) as api_url:
        upload = httpx.post(
            f"{api_url}/upload",
            files={"file": ("100_rows.xlsx", (SAMPLES / "100_rows.xlsx").read_bytes())},
            timeout=60,
        )
        assert upload.status_code == 202, upload.text
        upload_id = upload.json()["upload_id"]
        record = wait_for_upload(api_url, upload_id, UPLOAD_TIMEOUT_S, platform=dagster_dev)
        assert record["state"] == "succeeded", record
        assert (record["rows_total"], record["rows_done"], record["rows_rejected"]) == (100, 100, 0), record
        assert httpx.get(f"{api_url}/uploads/{upload_id}/result", timeout=60).status_code == 200
    # The scoring run is dagster dev's: its sensor made it, its instance holds it.
    assert wait_run(dagster_dev, client, record["run_id"], UPLOAD_TIMEOUT_S) == "SUCCESS", dagster_dev.tail()

    # Everything it wrote is on disk once it has stopped.
    dagster_dev.stop()
    left = untracked(checkout.root) - checkout.untracked_at_start
    assert not left, f"dagster dev wrote files .gitignore does not cover: {sorted(left)}"
