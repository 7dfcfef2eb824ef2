"""Configuration shared by the API, the pipelines and the CLI (env vars prefixed ``AIMQ_``)."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class AimqSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIMQ_", env_file=None, extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Every model-store key lives under this prefix, so several deployments (or test runs) can share
    # one Redis without seeing each other.
    redis_prefix: str = "aimq"
    redis_timeout_s: float = Field(default=2.0, gt=0)

    data_dir: Path = Path.home() / ".aimq"
    # HMAC key for model artifacts. When unset, a random key is created once in data_dir and reused
    # by every local process, so there is never a well-known default key.
    signing_key: SecretStr | None = None

    keep_versions: int = Field(default=5, ge=1)

    # Model pipeline
    training_rows_per_group: int = Field(default=100_000, ge=100)
    # A folder holding A.csv, B.csv and C.csv (the sample files' columns plus the price) to train on
    # instead of the generated data set.
    training_csv_dir: Path | None = None
    retrain_cron: str = "0 3 * * *"

    def resolved_signing_key(self) -> bytes:
        if self.signing_key is not None:
            return self.signing_key.get_secret_value().encode()
        return _key_from_file(self.data_dir / "signing.key")


def _key_from_file(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    return path.read_bytes().strip()


@lru_cache(maxsize=1)
def get_settings() -> AimqSettings:
    return AimqSettings()
