"""The Dockerfile (parsed with BuildKit's own parser, via the `dockerfile` package) builds from what
the build context holds, runs as a non-root user, and agrees with compose and Kubernetes on paths,
ports and commands. Docker is not available here to build it."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import lru_cache
from importlib import metadata
from pathlib import PurePosixPath

import dockerfile
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers.deploy import (
    ENV_EXAMPLE,
    K8S,
    by_kind,
    containers,
    filled,
    kustomize_build,
    load_compose,
    read_env_file,
)
from tests.helpers.paths import REPO

DOCKERFILE = REPO / "Dockerfile"


@lru_cache(maxsize=1)
def instructions() -> tuple[dockerfile.Command, ...]:
    return dockerfile.parse_file(str(DOCKERFILE))


def final_stage() -> list[dockerfile.Command]:
    commands = list(instructions())
    last_from = max(i for i, c in enumerate(commands) if c.cmd == "FROM")
    return commands[last_from:]


def final_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for command in final_stage():
        if command.cmd == "ENV":
            values = list(command.value)
            env.update(zip(values[::2], values[1::2]))
    return env


# --- .dockerignore, as Docker's pattern matcher reads it (the subset of syntax the file uses) -----
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = str(PurePosixPath(line.lstrip("!").strip("/")))
        assert not any(c in pattern for c in "[]\\"), f"matcher here does not support {pattern!r}"
        rules.append((negate, _pattern_regex(pattern)))
    return rules


def in_build_context(relative: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = PurePosixPath(relative).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for negate, regex in dockerignore_rules():
        if any(regex.match(c) for c in candidates):
            included = negate
    return included


def test_dockerignore_matcher_follows_docker_semantics() -> None:
    assert not in_build_context(".venv/bin/python")
    assert in_build_context("aimq_serving/settings.py")
    assert not in_build_context("aimq_serving/__pycache__/settings.cpython-311.pyc")


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        ".git/config",
        ".venv/bin/python",
        "k8s/overlays/local/secrets.env",
        "tests/conftest.py",
        ".aimq/signing.key",
    ],
)
def test_secrets_and_local_state_stay_out_of_the_build_context(path: str) -> None:
    assert not in_build_context(path)


def test_every_copy_source_exists_and_is_in_the_build_context() -> None:
    copies = [
        c for c in instructions() if c.cmd in ("COPY", "ADD") and not any(f.startswith("--from") for f in c.flags)
    ]
    assert copies
    for command in copies:
        for source in command.value[:-1]:
            path = REPO / source
            assert path.exists(), f"line {command.start_line}: {source} does not exist"
            assert in_build_context(source), f"line {command.start_line}: {source} is excluded by .dockerignore"
            if path.is_dir():
                files = [p.relative_to(REPO).as_posix() for p in path.rglob("*.py")]
                assert files and all(in_build_context(f) for f in files if "__pycache__" not in f), source


def test_installs_the_project_with_the_pinned_constraints() -> None:
    runs = " ".join(" ".join(c.value) for c in instructions() if c.cmd == "RUN")
    assert "pip install --no-build-isolation -c constraints.txt ." in runs
    assert "--only-binary=:all: -c constraints.txt" in runs


def test_the_build_backend_is_the_exact_version_of_constraints_txt() -> None:
    # pip's isolated build environment ignores -c: it would install the newest setuptools that
    # [build-system] allows. The Dockerfile installs the pinned one and builds without isolation.
    pins = dict(line.split("==", 1) for line in (REPO / "constraints.txt").read_text().split() if "==" in line)
    [requirement] = [
        Requirement(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    ]
    assert requirement.name == "setuptools" and requirement.specifier.contains(pins["setuptools"])
    steps = [[command.strip() for command in " ".join(c.value).split("&&")] for c in instructions() if c.cmd == "RUN"]
    [commands] = [step for step in steps if step[-1].endswith(" .")]  # the one that installs the project
    assert commands == [
        "pip install -c constraints.txt setuptools",
        "pip install --no-build-isolation -c constraints.txt .",
    ]


def test_python_of_the_image_is_the_one_constraints_were_resolved_with() -> None:
    args = dict(c.value[0].split("=", 1) for c in instructions() if c.cmd == "ARG" and "=" in c.value[0])
    assert args["PYTHON_VERSION"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    for command in instructions():
        if command.cmd == "FROM" and not command.value[0].startswith(("build", "$")):
            assert command.value[0].startswith("python:${PYTHON_VERSION}-slim")


def test_runs_as_a_numeric_non_root_user() -> None:
    users = [c.value[0] for c in final_stage() if c.cmd == "USER"]
    assert users, "the final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0)
    for manifest in ("code-server.yaml", "webserver.yaml", "daemon.yaml", "api.yaml"):
        docs = list(yaml.safe_load_all((K8S / "base" / manifest).read_text()))
        [deployment] = [d for d in docs if d["kind"] == "Deployment"]
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid), manifest


def test_paths_and_ports_agree_with_compose_and_kubernetes() -> None:
    env = final_env()
    compose = load_compose(filled(read_env_file(ENV_EXAMPLE)))
    services = compose["services"]
    home = env["DAGSTER_HOME"]
    assert f"./deploy/compose/dagster.yaml:{home}/dagster.yaml:ro" in services["daemon"]["volumes"]
    assert env["AIMQ_DATA_DIR"] == services["api"]["environment"]["AIMQ_DATA_DIR"]
    assert f"aimq-data:{env['AIMQ_DATA_DIR']}" in services["api"]["volumes"]

    docs = kustomize_build(K8S / "base")
    deployments = by_kind(docs, "Deployment")
    [daemon] = containers(deployments["daemon"])
    assert {m["mountPath"] for m in daemon["volumeMounts"] if m["name"] == "dagster-instance"} == {home}
    launcher = yaml.safe_load((K8S / "base" / "dagster" / "dagster.yaml").read_text())["run_launcher"]["config"][
        "isolated"
    ]["config"]
    assert launcher["dagster_home"] == home

    exposed = {int(p) for c in final_stage() if c.cmd == "EXPOSE" for p in c.value}
    container_ports = {
        p["containerPort"] for d in deployments.values() for c in containers(d) for p in c.get("ports", [])
    }
    assert container_ports <= exposed


def test_default_command_is_the_api_with_tini_as_pid_1() -> None:
    [entrypoint] = [c for c in final_stage() if c.cmd == "ENTRYPOINT"]
    assert list(entrypoint.value) == ["tini", "--"]
    [cmd] = [c for c in final_stage() if c.cmd == "CMD"]
    compose_api = load_compose(filled(read_env_file(ENV_EXAMPLE)))["services"]["api"]["command"]
    assert list(cmd.value) == compose_api
    assert "aimq_serving.api.app:create_app" in cmd.value and "--factory" in cmd.value


def test_kubernetes_keeps_the_entrypoint() -> None:
    # `command` would replace tini; `args` only replaces CMD.
    for deployment in by_kind(kustomize_build(K8S / "base"), "Deployment").values():
        for container in containers(deployment):
            if container["image"].startswith("aimq"):
                assert "command" not in container and container["args"], deployment["metadata"]["name"]


def _runtime_distributions() -> set[str]:
    """The distributions the image installs: pyproject.toml's [project] dependencies and, recursively,
    theirs (with the extras asked for and the markers of this Python, the image's)."""
    todo = [Requirement(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement = todo.pop()
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        for raw in metadata.requires(requirement.name) or []:
            sub = Requirement(raw)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in requirement.extras or {""}):
                todo.append(sub)
    return {name for name, _ in seen}


def _imported_top_level_modules(package: str) -> set[str]:
    modules = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules


def test_every_module_the_code_imports_is_installed_by_the_runtime_dependencies() -> None:
    # The image installs [project] dependencies only: a package the code imports that only the test
    # extra brings (openpyxl, xlsxwriter, msoffcrypto-tool) would be missing there.
    own = {"aimq_cli", "aimq_pipelines", "aimq_serving", "aimq_tabular"}
    imported = set().union(*(_imported_top_level_modules(p) for p in own)) - own - sys.stdlib_module_names
    providers = metadata.packages_distributions()
    runtime = _runtime_distributions()
    missing = {m for m in imported if not {canonicalize_name(d) for d in providers.get(m, [])} & runtime}
    assert {m: providers.get(m) for m in missing} == {}
    assert {"olefile", "fastexcel", "dagster"} <= imported and "openpyxl" not in runtime
