"""Every dagster.yaml variant loads as a Dagster instance config, and its run launcher is built and
launches a run the way the deployment would: a container (compose) or a Kubernetes Job (k8s).

Docker and a cluster are not available here. The compose launcher talks to a minimal stand-in of the
Docker Engine API on a Unix socket that records the container it is asked to create; the Kubernetes
launcher is given a BatchV1Api stand-in that records the Job it is asked to create. Everything up to
that request is the real dagster-docker / dagster-k8s code with the committed config.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socketserver
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import kubernetes
import kubernetes_validate
import pytest
import sqlalchemy
import yaml
from dagster._config import process_config
from dagster._core.code_pointer import ModuleCodePointer, load_python_module
from dagster._core.instance.ref import InstanceRef
from dagster._core.launcher import DefaultRunLauncher, LaunchRunContext
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.runs import SqliteRunStorage
from dagster._core.utils import make_new_run_id
from dagster._serdes.config_class import ConfigurableClassData
from dagster_docker import DockerRunLauncher
from dagster_k8s import K8sRunLauncher
from dagster_postgres.utils import pg_url_from_config

from aimq_cli.instance import DAGSTER_YAML
from aimq_pipelines.run_launcher import IN_CODE_SERVER, ISOLATED, LAUNCHED_IN_TAG, SizeRoutedRunLauncher
from aimq_pipelines.sqlite_storage import PooledSqliteStorage
from aimq_pipelines.uploads.jobs import UPLOAD_BYTES_TAG
from tests.helpers.deploy import (
    ENV_EXAMPLE,
    K8S,
    LOCAL_SECRETS_EXAMPLE,
    filled,
    kustomize_build,
    load_compose,
    read_env_file,
)
from tests.helpers.paths import REPO

LOCAL = DAGSTER_YAML
COMPOSE = REPO / "deploy" / "compose" / "dagster.yaml"
K8S_INSTANCE = K8S / "base" / "dagster" / "dagster.yaml"
IMAGE = "registry.example.com/aimq:1.2.3"


def instance_ref(config_file: Path, tmp_path: Path) -> InstanceRef:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(config_file, home / "dagster.yaml")
    return InstanceRef.from_dir(str(home))


def checked_config(data: ConfigurableClassData) -> dict[str, Any]:
    """The class's config after Dagster's own validation (env vars resolved), without building it."""
    klass = getattr(load_python_module(data.module_name, None), data.class_name)
    result = process_config(klass.config_type(), yaml.safe_load(data.config_yaml) or {})
    assert result.success, f"{data.module_name}.{data.class_name}: {[e.message for e in result.errors]}"
    return result.value


def all_class_data(ref: InstanceRef) -> list[ConfigurableClassData]:
    fields = [f for f in ref._fields if f.endswith("_data")]
    return [getattr(ref, f) for f in fields if getattr(ref, f) is not None]


def compose_environment() -> dict[str, str]:
    """The environment compose gives the daemon (x-aimq-env), from a filled-in .env.example."""
    compose = load_compose(filled(read_env_file(ENV_EXAMPLE)))
    return {k: str(v) for k, v in compose["services"]["daemon"]["environment"].items()}


def k8s_environment() -> dict[str, str]:
    """What the daemon pod gets: ConfigMap aimq-env, the Secret, and its namespace (downward API)."""
    env = read_env_file(K8S / "base" / "config.env")
    env.update(filled(read_env_file(LOCAL_SECRETS_EXAMPLE)))
    env["DAGSTER_K8S_PIPELINE_RUN_NAMESPACE"] = "aimq"
    return env


def origin(image: str) -> JobPythonOrigin:
    return JobPythonOrigin(
        "train_models",
        RepositoryPythonOrigin(
            executable_path="/opt/venv/bin/python",
            code_pointer=ModuleCodePointer("aimq_pipelines.definitions", "defs"),
            container_image=image,
            # What `dagster code-server start` reports: the image's `dagster` on PATH.
            entry_point=["dagster"],
        ),
    )


@pytest.fixture(scope="module")
def recording_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dg.DagsterInstance]:
    """A throwaway local instance that holds the runs handed to the launchers under test."""
    home = tmp_path_factory.mktemp("recording_home")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def add_run(
    instance: dg.DagsterInstance, tags: dict[str, str] | None = None, job_name: str = "train_models"
) -> DagsterRun:
    run = DagsterRun(job_name=job_name, run_id=make_new_run_id(), tags=tags or {}, job_code_origin=origin(IMAGE))
    return instance.add_run(run)


# --- local ---------------------------------------------------------------------------------------
def test_local_instance_is_sqlite_queued_two_at_a_time_with_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(LOCAL, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # as every aimq process has it
    with dg.DagsterInstance.from_config(str(home)) as instance:
        ref = instance.get_ref().storage_data  # Dagster's SQLite files, with connections kept
        assert (ref.module_name, ref.class_name) == (PooledSqliteStorage.__module__, PooledSqliteStorage.__name__)
        assert (home / "history" / "runs.db").is_file() and (home / "schedules" / "schedules.db").is_file()
        assert isinstance(instance.run_launcher, DefaultRunLauncher)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.run_coordinator.get_run_queue_config().max_concurrent_runs == 2
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert not instance.telemetry_enabled and not instance.nux_enabled
        assert instance.run_monitoring_enabled
        assert isinstance(instance.run_storage, SqliteRunStorage)
        assert Path(instance.root_directory) == home


def assert_postgres_driver_loads(storage_config: dict[str, Any]) -> None:
    """The engine dagster-postgres would build: creating it imports the DB driver, and connects
    to nothing yet."""
    engine = sqlalchemy.create_engine(pg_url_from_config(storage_config))
    assert engine.dialect.driver == "psycopg2"
    engine.dispose()


# --- compose ---------------------------------------------------------------------------------------
def test_compose_instance_config_is_valid_with_the_compose_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in compose_environment().items():
        monkeypatch.setenv(key, value)
    ref = instance_ref(COMPOSE, tmp_path)
    for data in all_class_data(ref):
        checked_config(data)
    storage = checked_config(ref.storage_data)
    assert storage["postgres_db"]["hostname"] == "postgres"
    assert_postgres_driver_loads(storage)
    assert isinstance(ref.run_launcher, SizeRoutedRunLauncher)
    assert isinstance(ref.run_launcher.isolated, DockerRunLauncher)
    assert isinstance(ref.run_coordinator, QueuedRunCoordinator)


def test_compose_instance_config_names_a_missing_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in compose_environment().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("DAGSTER_POSTGRES_PASSWORD")
    ref = instance_ref(COMPOSE, tmp_path)
    with pytest.raises(AssertionError, match="DAGSTER_POSTGRES_PASSWORD"):
        checked_config(ref.storage_data)


class _DockerEngine(http.server.BaseHTTPRequestHandler):
    """Just enough of the Docker Engine API for DockerRunLauncher.launch_run."""

    protocol_version = "HTTP/1.1"
    created: list[dict[str, Any]]
    started: list[str]

    def address_string(self) -> str:  # a Unix socket has no client address
        return "docker-client"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: dict[str, Any] | None = None) -> None:
        payload = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        if self.path.endswith("/version"):
            self._reply(200, {"ApiVersion": "1.45", "MinAPIVersion": "1.24", "Version": "26.1.0"})
        elif self.path.endswith("/containers/c0ffee/json") and self.created:
            inspect = {"Id": "c0ffee", "Name": "/run", "State": {"Status": "created"}, "Config": self.created[-1]}
            self._reply(200, inspect)
        else:
            self._reply(404, {"message": f"not in this stand-in: GET {self.path}"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "/containers/create" in self.path:
            self.created.append(json.loads(body))
            self._reply(201, {"Id": "c0ffee", "Warnings": []})
        elif self.path.endswith("/start"):
            self.started.append(self.path)
            self._reply(204)
        else:
            self._reply(404, {"message": f"not in this stand-in: POST {self.path}"})


@pytest.fixture
def docker_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_DockerEngine]]:
    socket_dir = Path(tempfile.mkdtemp(prefix="aimq-docker-"))  # short: Unix socket paths are limited
    handler = type("Engine", (_DockerEngine,), {"created": [], "started": []})

    class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

    server = Server(str(socket_dir / "docker.sock"), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket_dir / 'docker.sock'}")
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_compose_launcher_starts_each_run_as_a_container_on_the_compose_network(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    recording_instance: dg.DagsterInstance,
    docker_engine: type[_DockerEngine],
) -> None:
    environment = compose_environment()
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    launcher = instance_ref(COMPOSE, tmp_path).run_launcher
    assert isinstance(launcher, SizeRoutedRunLauncher) and isinstance(launcher.isolated, DockerRunLauncher)
    launcher.register_instance(recording_instance)
    run = add_run(recording_instance)  # training: never in the code server

    launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    assert recording_instance.get_run_by_id(run.run_id).tags[LAUNCHED_IN_TAG] == ISOLATED

    [request] = docker_engine.created
    assert len(docker_engine.started) == 1
    assert request["Image"] == IMAGE  # the code server's image, not one named in the config
    assert request["Cmd"][:3] == ["dagster", "api", "execute_run"]
    env = dict(item.split("=", 1) for item in request["Env"])
    assert {k: env[k] for k in environment} == environment  # every compose setting reaches the run
    compose = load_compose(filled(read_env_file(ENV_EXAMPLE)))
    host = request["HostConfig"]
    assert host["NetworkMode"] == compose["networks"]["default"]["name"]
    data_volume = compose["volumes"]["aimq-data"]["name"]
    assert f"{data_volume}:/var/lib/aimq:rw" in host["Binds"] or f"{data_volume}:/var/lib/aimq" in host["Binds"]
    assert environment["AIMQ_DATA_DIR"] == "/var/lib/aimq"
    assert host["Memory"] > 0
    assert request["Labels"]["dagster/run_id"] == run.run_id


def test_compose_launcher_sends_small_scoring_runs_to_the_code_server_and_the_rest_to_containers(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    recording_instance: dg.DagsterInstance,
    docker_engine: type[_DockerEngine],
) -> None:
    for key, value in compose_environment().items():
        monkeypatch.setenv(key, value)
    launcher = instance_ref(COMPOSE, tmp_path).run_launcher
    launcher.register_instance(recording_instance)
    limit = int(compose_environment()["AIMQ_SMALL_UPLOAD_BYTES"])
    assert launcher.small_upload_bytes == limit > 0

    small = add_run(recording_instance, {UPLOAD_BYTES_TAG: str(limit)}, job_name="score_uploads")
    # Dagster's DefaultRunLauncher path: StartRun to the code location's server, found in the workspace.
    with pytest.raises(dg.DagsterInvariantViolationError, match="workspace"):
        launcher.launch_run(LaunchRunContext(dagster_run=small, workspace=None))
    assert recording_instance.get_run_by_id(small.run_id).tags[LAUNCHED_IN_TAG] == IN_CODE_SERVER
    assert docker_engine.created == []

    untagged = add_run(recording_instance, job_name="score_upload")  # e.g. re-executed without its tags
    large = add_run(recording_instance, {UPLOAD_BYTES_TAG: str(limit + 1)}, job_name="score_upload")
    for run in (untagged, large):
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        assert recording_instance.get_run_by_id(run.run_id).tags[LAUNCHED_IN_TAG] == ISOLATED
    assert len(docker_engine.created) == 2


# --- Kubernetes -----------------------------------------------------------------------------------
class _BatchApi:
    """Records the Jobs the launcher submits, in place of a cluster's batch/v1 API."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, kubernetes.client.V1Job]] = []

    def create_namespaced_job(self, body: kubernetes.client.V1Job, namespace: str, **_: Any) -> kubernetes.client.V1Job:
        self.jobs.append((namespace, body))
        return body


def k8s_launcher(tmp_path: Path, batch_api: _BatchApi) -> K8sRunLauncher:
    """The committed launcher config, built as the daemon builds it; only how it finds the API
    server differs (a kubeconfig file instead of the in-cluster service account)."""
    ref = instance_ref(K8S_INSTANCE, tmp_path)
    data = ref.run_launcher_data
    assert (data.module_name, data.class_name) == ("aimq_pipelines.run_launcher", "SizeRoutedRunLauncher")
    isolated = yaml.safe_load(data.config_yaml)["isolated"]
    assert (isolated["module"], isolated["class"]) == ("dagster_k8s", "K8sRunLauncher")
    raw = isolated["config"]
    assert raw["load_incluster_config"] is True
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    raw.update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))
    config = process_config(K8sRunLauncher.config_type(), raw)
    assert config.success, [e.message for e in config.errors]
    return K8sRunLauncher(inst_data=None, k8s_client_batch_api=batch_api, **config.value)


@pytest.fixture
def k8s_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = k8s_environment()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture(scope="module")
def k8s_base_docs() -> list[dict[str, Any]]:
    return kustomize_build(K8S / "base")


def launch_k8s_job(
    tmp_path: Path, instance: dg.DagsterInstance, tags: dict[str, str] | None = None
) -> tuple[str, dict[str, Any]]:
    batch = _BatchApi()
    launcher = k8s_launcher(tmp_path, batch)
    launcher.register_instance(instance)
    run = add_run(instance, tags)
    launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    [(namespace, job)] = batch.jobs
    return namespace, kubernetes.client.ApiClient().sanitize_for_serialization(job)


def test_k8s_instance_config_is_valid_with_the_pod_environment(tmp_path: Path, k8s_env: dict[str, str]) -> None:
    ref = instance_ref(K8S_INSTANCE, tmp_path)
    for data in all_class_data(ref):
        checked_config(data)
    storage = checked_config(ref.storage_data)
    assert storage["postgres_db"]["hostname"] == k8s_env["DAGSTER_POSTGRES_HOSTNAME"]
    assert_postgres_driver_loads(storage)
    assert isinstance(ref.run_coordinator, QueuedRunCoordinator)


def test_k8s_launcher_submits_a_valid_job_with_the_code_servers_image(
    tmp_path: Path, k8s_env: dict[str, str], recording_instance: dg.DagsterInstance, k8s_base_docs: list[dict[str, Any]]
) -> None:
    namespace, job = launch_k8s_job(tmp_path, recording_instance)

    assert namespace == "aimq"
    kubernetes_validate.validate(job, kubernetes_validate.utils.latest_version(), strict=True)
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == IMAGE
    assert container["args"][:3] == ["dagster", "api", "execute_run"]

    # Names the launcher config uses exist in the base, under those names.
    names = {(d["kind"], d["metadata"]["name"]) for d in k8s_base_docs}
    assert ("ServiceAccount", pod["serviceAccountName"]) in names
    assert pod["automountServiceAccountToken"] is False
    env_from = container["envFrom"]
    assert {e["configMapRef"]["name"] for e in env_from if "configMapRef" in e} == {"aimq-env"}
    assert ("ConfigMap", "aimq-env") in names
    assert {e["secretRef"]["name"] for e in env_from if "secretRef" in e} == {"aimq-secrets"}
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"aimq-data"} and ("PersistentVolumeClaim", "aimq-data") in names
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/lib/aimq", "/tmp"} <= mounts
    assert ("ConfigMap", "dagster-instance") in names

    # The restricted Pod Security Standard of the namespace admits it.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]

    launcher_config = yaml.safe_load(K8S_INSTANCE.read_text())["run_launcher"]["config"]["isolated"]["config"]
    assert container["resources"] == launcher_config["resources"]


def test_k8s_job_resources_come_from_the_dagster_k8s_config_tag(
    tmp_path: Path, k8s_env: dict[str, str], recording_instance: dg.DagsterInstance
) -> None:
    resources = {"requests": {"cpu": "2", "memory": "6Gi"}, "limits": {"memory": "8Gi"}}
    tag = {
        "container_config": {"resources": resources},
        "pod_spec_config": {"node_selector": {"aimq/pool": "scoring"}},
    }
    _, job = launch_k8s_job(tmp_path, recording_instance, {"dagster-k8s/config": json.dumps(tag)})

    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == resources
    assert pod["nodeSelector"] == {"aimq/pool": "scoring"}
    # The tag adds to the launcher's pod settings; it does not replace them.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize(
    "tag",
    [
        {"pod_spec_config": {"volumes": [{"name": "host", "hostPath": {"path": "/"}}]}},
        {"container_config": {"security_context": {"privileged": True}}},
        {"pod_spec_config": {"service_account_name": "aimq-dagster"}},
    ],
    ids=["hostPath volume", "privileged", "service account"],
)
def test_k8s_tags_cannot_widen_a_runs_privileges(
    tmp_path: Path, k8s_env: dict[str, str], recording_instance: dg.DagsterInstance, tag: dict[str, Any]
) -> None:
    with pytest.raises(Exception, match="violated the allowed list"):
        launch_k8s_job(tmp_path, recording_instance, {"dagster-k8s/config": json.dumps(tag)})
