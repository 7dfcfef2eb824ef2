"""A private PostgreSQL server for a test module: Debian's `postgresql` package (.ci/run installs it where
missing), a new cluster in a temporary folder, on a free 127.0.0.1 port, with a password and SCRAM
authentication over TCP as the compose stack's PostgreSQL has (tests/deploy/standins/postgres), and every
connection logged (``connections_opened``): what the tests of Dagster's PostgreSQL storage count. Where
the server is not installed those tests skip, saying so, except in CI, where they fail.

PostgreSQL refuses to run as root: as root the server runs as the `postgres` user the package creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.ports import free_port

_BIN_DIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name))
BIN = Path(_BIN_DIRS[-1]) if _BIN_DIRS else None
MISSING = "PostgreSQL's server is not installed (Debian package postgresql; .ci/run installs it)"
# Skipped where it is missing, saying so, except in CI (CI=true), where start() fails instead.
needs_postgres_server = pytest.mark.skipif(BIN is None and os.environ.get("CI") != "true", reason=MISSING)

USER = "aimq"
PASSWORD = "aimq-test-password"
DATABASE = "dagster"


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@dataclass
class PrivatePostgres:
    directory: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    def connections_opened(self) -> int:
        """Connections the server has accepted since it started (its log's `connection authorized`)."""
        return self.log.read_text(errors="replace").count("connection authorized")

    def _pg_ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c log_connections=on"
        subprocess.run(
            _as_server_user(
                [
                    str(BIN / "pg_ctl"),
                    "-D",
                    str(self.directory / "data"),
                    "-l",
                    str(self.log),
                    "-w",
                    "-o",
                    options,
                    *args,
                ]
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def restart(self) -> None:
        self._pg_ctl("-m", "fast", "restart")

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


def start() -> PrivatePostgres:
    if BIN is None:
        raise RuntimeError(MISSING)
    directory = Path(tempfile.mkdtemp(prefix="aimq-postgres-"))
    password_file = directory / "password"
    password_file.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        for path in (directory, password_file):
            os.chown(path, account.pw_uid, account.pw_gid)
    subprocess.run(
        _as_server_user(
            [
                str(BIN / "initdb"),
                "-D",
                str(directory / "data"),
                "-U",
                USER,
                f"--pwfile={password_file}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    password_file.unlink()
    server = PrivatePostgres(directory, free_port())
    server._pg_ctl("start")
    subprocess.run(
        _as_server_user([str(BIN / "createdb"), "-h", str(directory), "-p", str(server.port), "-U", USER, DATABASE]),
        check=True,
        capture_output=True,
        timeout=60,
    )
    return server
