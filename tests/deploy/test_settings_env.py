"""Every AIMQ_* variable a deployment file sets or names is a field of AimqSettings, and the values
the deployments give them are valid settings."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from aimq_serving.settings import AimqSettings
from tests.helpers.deploy import ENV_EXAMPLE, K8S, LOCAL_SECRETS_EXAMPLE, filled, load_compose, read_env_file
from tests.helpers.paths import REPO

AIMQ_VAR = re.compile(r"\bAIMQ_[A-Z0-9_]*[A-Z0-9]\b")


def deployment_files() -> list[Path]:
    files = [REPO / "docker-compose.yml", ENV_EXAMPLE, REPO / "Dockerfile"]
    files += sorted((REPO / "deploy").rglob("*.yaml"))
    files += sorted(p for p in K8S.rglob("*") if p.is_file() and p.name != "secrets.env")
    return files


def settings_variables() -> set[str]:
    assert AimqSettings.model_config["env_prefix"] == "AIMQ_"
    return {f"AIMQ_{name.upper()}" for name in AimqSettings.model_fields}


@pytest.mark.parametrize("path", deployment_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_aimq_variable_is_a_settings_field(path: Path) -> None:
    unknown = set(AIMQ_VAR.findall(path.read_text())) - settings_variables()
    assert not unknown, f"{path.relative_to(REPO)} names {sorted(unknown)}, not fields of AimqSettings"


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> AimqSettings:
    for key in [k for k in os.environ if k.startswith("AIMQ_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return AimqSettings()


def test_compose_values_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = load_compose(filled(read_env_file(ENV_EXAMPLE)))["services"]["api"]["environment"]
    settings = _settings_from({k: str(v) for k, v in env.items()}, monkeypatch)
    assert str(settings.data_dir) == "/var/lib/aimq"
    assert settings.signing_key is not None


def test_k8s_values_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**read_env_file(K8S / "base" / "config.env"), **filled(read_env_file(LOCAL_SECRETS_EXAMPLE))}
    settings = _settings_from(env, monkeypatch)
    assert str(settings.data_dir) == "/var/lib/aimq"
    assert settings.signing_key is not None
