"""AIMQ_ACCESS_LOG: off by default under every command line that starts the API, on when set."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from aimq_serving.settings import AimqSettings
from tests.helpers.api_server import server_env, uvicorn_server

pytestmark = pytest.mark.slow

# uvicorn's access log line: client - "METHOD PATH HTTP/1.1" STATUS
LINE = '"POST /ping HTTP/1.1" 200'


def requests_logged(settings: AimqSettings, log_path: Path, *, deployed: bool, **env: str) -> bool:
    with uvicorn_server({**server_env(settings), **env}, workers=1, log_path=log_path, deployed=deployed) as url:
        with httpx.Client(base_url=url) as client:
            for _ in range(3):
                assert client.post("/ping", content=b"{}").status_code == 200
    text = log_path.read_text()
    assert "Application startup complete" in text  # the log is the server's, and it was written
    return LINE in text


@pytest.mark.parametrize("deployed", [True, False], ids=["uvicorn command line", "python -m aimq_serving.api"])
def test_the_access_log_is_off_by_default_and_on_with_the_setting(
    api_settings: AimqSettings, tmp_path: Path, deployed: bool
) -> None:
    assert not requests_logged(api_settings, tmp_path / "default.log", deployed=deployed)
    assert requests_logged(api_settings, tmp_path / "on.log", deployed=deployed, AIMQ_ACCESS_LOG="true")
