"""API-key authentication: off by default; when keys are configured every non-public endpoint needs
one (Bearer or X-API-Key), refusals are 401 JSON with WWW-Authenticate, the rate limit counts per
key name, the OpenAPI schema declares the scheme, and the CLI sends AIMQ_API_KEY / --api-key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from aimq_serving.api.app import create_app
from aimq_serving.api.auth import ApiKeyConfigError, ApiKeys, presented_key
from aimq_serving.api.payloads import SAMPLE_ROWS
from aimq_serving.settings import AimqSettings
from tests.helpers.api_server import server_env, uvicorn_server
from tests.helpers.paths import REPO
from tests.helpers.redis_keys import clear_prefix, copy_models

CI_KEY = "ci-" + "0123456789abcdef" * 2
WEB_KEY = "web-" + "fedcba9876543210" * 2
PROTECTED = [
    ("POST", "/predict/onnx"),
    ("POST", "/predict/pickle"),
    ("POST", "/predict"),
    ("GET", "/models"),
    ("GET", "/ping"),
    ("POST", "/ping"),
    ("GET", "/uploads"),
    ("POST", "/upload"),
    ("GET", f"/uploads/{'0' * 32}"),
    ("GET", f"/uploads/{'0' * 32}/result"),
]
PUBLIC = [
    "/health",
    "/ready",
    "/metrics",
    "/",
    "/static/app.js",
    "/static/style.css",
    "/ui/config",
    "/openapi.json",
    "/docs",
]


def _with_keys(settings: AimqSettings, keys: str, **extra: Any) -> AimqSettings:
    return settings.model_copy(
        update={
            "api_keys": SecretStr(keys),
            "redis_prefix": f"{settings.redis_prefix}-auth-{uuid.uuid4().hex[:6]}",
            **extra,
        }
    )


@pytest.fixture(scope="module")
def secured(api_settings: AimqSettings, uploads_settings_module: AimqSettings, redis_client) -> Iterator[TestClient]:
    settings = _with_keys(uploads_settings_module, f"ci:{CI_KEY},web:{WEB_KEY}", rate_limit_requests=1_000_000)
    copy_models(redis_client, api_settings.redis_prefix, settings.redis_prefix)
    with TestClient(create_app(settings)) as client:
        yield client
    clear_prefix(redis_client, settings.redis_prefix)


@pytest.fixture(scope="module")
def uploads_settings_module(
    api_settings: AimqSettings, run_id: str, tmp_path_factory: pytest.TempPathFactory, upload_records: None
) -> Iterator[AimqSettings]:
    from tests.helpers.topology import delete_topology, unique_topology_settings

    own = unique_topology_settings(api_settings, run_id, tmp_path_factory.mktemp("auth-uploads"))
    yield own
    delete_topology(own)


# --- configuration ---------------------------------------------------------------------------------
def test_off_by_default(client: TestClient) -> None:
    assert AimqSettings.model_fields["api_keys"].default is None
    assert AimqSettings.model_fields["api_keys_file"].default is None
    assert client.get("/ping").status_code == 200
    assert client.post("/predict/onnx", json=SAMPLE_ROWS[0]).status_code == 200
    schema = client.get("/openapi.json").json()
    assert "securitySchemes" not in schema.get("components", {})
    assert "401" not in schema["paths"]["/predict/onnx"]["post"]["responses"]


def test_entries_with_and_without_names() -> None:
    keys = ApiKeys.parse(f"ci:{CI_KEY}, {WEB_KEY}\n# a comment, with a comma\n\n", "AIMQ_API_KEYS")
    assert keys.names == ["ci", "key2"]
    assert keys.identify(CI_KEY.encode()) == "ci"
    assert keys.identify(WEB_KEY.encode()) == "key2"
    assert keys.identify(CI_KEY[:-1].encode()) is None
    assert keys.identify(b"") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ci:short", "at least 16 characters"),
        (f"ci:{CI_KEY},ci:{WEB_KEY}", "the name 'ci' is given to two keys"),
        (f"ci:{CI_KEY},web:{CI_KEY}", "key 'web' is configured twice"),
        (f"bad name:{CI_KEY}", "entry 1: the name before ':'"),
        ("ci:" + "x" * 10 + " " + "y" * 10, "without spaces"),
    ],
)
def test_bad_entries_stop_the_start_without_echoing_the_key(text: str, message: str) -> None:
    with pytest.raises(ApiKeyConfigError, match=message) as raised:
        ApiKeys.parse(text, "AIMQ_API_KEYS")
    assert CI_KEY not in str(raised.value) and WEB_KEY not in str(raised.value)


def test_keys_from_a_file_add_to_the_variable(tmp_path: Path, api_settings: AimqSettings) -> None:
    path = tmp_path / "api-keys"
    path.write_text(f"# mounted secret\nweb:{WEB_KEY}\n")
    keys = ApiKeys.from_settings(
        api_settings.model_copy(update={"api_keys": SecretStr(f"ci:{CI_KEY}"), "api_keys_file": path})
    )
    assert keys is not None and keys.names == ["ci", "web"]
    path.write_text("# nothing but comments\n")
    with pytest.raises(ApiKeyConfigError, match="holds no key"):
        ApiKeys.from_settings(api_settings.model_copy(update={"api_keys_file": path}))
    with pytest.raises(ApiKeyConfigError, match="cannot read"):
        ApiKeys.from_settings(api_settings.model_copy(update={"api_keys_file": tmp_path / "missing"}))


def test_a_rotated_key_file_takes_effect_without_a_restart(
    make_client, api_settings: AimqSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "api-keys"

    def rotate(text: str) -> None:  # as a secret volume does: a new file swapped in
        staged = tmp_path / "staged"
        staged.write_text(text)
        os.replace(staged, path)

    rotate(f"ci:{CI_KEY}\n")
    settings = api_settings.model_copy(
        update={
            "api_keys_file": path,
            "api_keys_file_check_s": 0.0,
            "rate_limit_requests": 1_000_000,
            "redis_prefix": f"{api_settings.redis_prefix}-rotate-{uuid.uuid4().hex[:6]}",
        }
    )
    client = make_client(settings, owns_prefix=True)

    def answers() -> tuple[int, int]:
        return tuple(client.get("/ping", headers={"X-API-Key": key}).status_code for key in (CI_KEY, WEB_KEY))  # type: ignore[return-value]

    assert answers() == (200, 401)
    rotate(f"web:{WEB_KEY}\n")
    assert answers() == (401, 200)
    # A broken or emptied file does not lock everyone out, nor turn authentication off: the keys in
    # force stay, and the log says why the new file was not taken.
    with caplog.at_level("ERROR", logger="aimq_serving.api.auth"):
        rotate("# emptied by mistake\n")
        assert answers() == (401, 200)
        path.unlink()
        assert answers() == (401, 200)
    assert "holds no key" in caplog.text and "cannot read" in caplog.text
    assert CI_KEY not in caplog.text and WEB_KEY not in caplog.text
    rotate(f"ci:{CI_KEY}\nweb:{WEB_KEY}\n")
    assert answers() == (200, 200)


def test_the_key_is_taken_from_bearer_or_x_api_key() -> None:
    assert presented_key([(b"authorization", b"Bearer abc")]) == b"abc"
    assert presented_key([(b"authorization", b"bearer  abc ")]) == b"abc"
    assert presented_key([(b"x-api-key", b"abc")]) == b"abc"
    # A Basic header from a proxy is not a key; X-API-Key still counts.
    assert presented_key([(b"authorization", b"Basic dXNlcg=="), (b"x-api-key", b"abc")]) == b"abc"
    assert presented_key([(b"authorization", b"Basic dXNlcg==")]) is None
    assert presented_key([(b"x-api-key", b"")]) is None


# --- the app with keys -----------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_protected_endpoints_need_a_key(secured: TestClient, method: str, path: str) -> None:
    missing = secured.request(method, path)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="aimq"'
    assert missing.json() == {
        "detail": "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
    }
    wrong = secured.request(method, path, headers={"Authorization": f"Bearer {CI_KEY}x"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == 'Bearer realm="aimq", error="invalid_token"'
    assert wrong.json() == {"detail": "invalid API key"}
    # With a key the request reaches its handler, whatever that then answers.
    assert secured.request(method, path, headers={"X-API-Key": CI_KEY}).status_code != 401


def test_a_right_key_in_either_header_predicts(secured: TestClient) -> None:
    for headers in (
        {"Authorization": f"Bearer {CI_KEY}"},
        {"X-API-Key": WEB_KEY},
        {"authorization": f"bearer {WEB_KEY}"},
    ):
        response = secured.post("/predict/onnx", json=SAMPLE_ROWS[0], headers=headers)
        assert response.status_code == 200, headers
        assert response.json()["model_group"] == SAMPLE_ROWS[0]["model_group"]


@pytest.mark.parametrize("path", PUBLIC)
def test_probes_scrapes_the_page_and_the_api_description_need_no_key(secured: TestClient, path: str) -> None:
    assert secured.get(path).status_code == 200


def test_openapi_declares_the_schemes_on_protected_operations_only(secured: TestClient) -> None:
    schema = secured.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer <API key>",
    }
    assert schemes["apiKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if path in ("/health", "/ready", "/metrics"):
                assert "security" not in operation, path
            else:
                assert operation["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}], (method, path)
                assert "401" in operation["responses"], (method, path)


def test_each_key_has_its_own_rate_limit_budget(make_client, api_settings: AimqSettings) -> None:
    client = make_client(
        _with_keys(api_settings, f"ci:{CI_KEY},web:{WEB_KEY}", rate_limit_requests=2), owns_prefix=True
    )
    ci, web = {"X-API-Key": CI_KEY}, {"Authorization": f"Bearer {WEB_KEY}"}
    assert [client.get("/ping", headers=ci).status_code for _ in range(2)] == [200, 200]
    refused = client.get("/ping", headers=ci)
    assert refused.status_code == 429
    # Said by the key's name; the key itself is never echoed.
    assert "per API key 'ci'" in refused.json()["detail"] and CI_KEY not in refused.text
    # Same client address, another key: a budget of its own.
    assert [client.get("/ping", headers=web).status_code for _ in range(2)] == [200, 200]
    assert client.get("/ping", headers=web).status_code == 429


def test_a_key_keeps_its_budget_under_a_spoofed_key_header(make_client, api_settings: AimqSettings) -> None:
    """With keys on, the rate-limit key header cannot be used to get a fresh budget."""
    client = make_client(
        _with_keys(api_settings, f"ci:{CI_KEY}", rate_limit_requests=2, rate_limit_key_header="X-Client"),
        owns_prefix=True,
    )
    codes = [client.get("/ping", headers={"X-API-Key": CI_KEY, "X-Client": str(i)}).status_code for i in range(3)]
    assert codes == [200, 200, 429]


def test_refused_requests_count_against_the_address(make_client, api_settings: AimqSettings) -> None:
    client = make_client(_with_keys(api_settings, f"ci:{CI_KEY}", rate_limit_requests=3), owns_prefix=True)
    guesses = [client.get("/ping", headers={"X-API-Key": f"guess-{i:020d}"}).status_code for i in range(4)]
    assert guesses == [401, 401, 401, 429]
    # The key's own budget is separate from the address's.
    assert client.get("/ping", headers={"X-API-Key": CI_KEY}).status_code == 200


def test_refusals_are_counted_in_the_metrics(secured: TestClient) -> None:
    secured.get("/models")
    metrics = secured.get("/metrics").text
    assert 'aimq_http_request_duration_seconds_count{endpoint="/models",method="GET",status="401"}' in metrics


# --- the command line --------------------------------------------------------------------------------
def _aimq(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("aimq")), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_the_cli_sends_the_key_and_says_when_one_is_missing_or_wrong(api_settings: AimqSettings) -> None:
    settings = api_settings.model_copy(update={"api_keys": SecretStr(f"ci:{CI_KEY}")})
    with uvicorn_server(server_env(settings), workers=1) as url:
        base = {k: v for k, v in os.environ.items() if not k.startswith("AIMQ_API_KEY")}
        base["AIMQ_API_URL"] = url
        record = json.dumps(SAMPLE_ROWS[0])

        missing = _aimq(["predict", record, "--json"], base)
        assert missing.returncode == 1
        assert missing.stderr.strip() == (
            f"aimq: error: the API at {url} requires an API key: set AIMQ_API_KEY or pass --api-key"
        )
        wrong = _aimq(["predict", record, "--json", "--api-key", "not-" + CI_KEY], base)
        assert wrong.returncode == 1
        assert wrong.stderr.strip() == f"aimq: error: the API at {url} refused the API key (AIMQ_API_KEY / --api-key)"

        from_env = _aimq(["predict", record, "--json"], {**base, "AIMQ_API_KEY": CI_KEY})
        assert from_env.returncode == 0, from_env.stderr
        assert json.loads(from_env.stdout)["model_group"] == SAMPLE_ROWS[0]["model_group"]
        from_flag = _aimq(["predict", record, "--json", "--api-key", CI_KEY], base)
        assert from_flag.returncode == 0, from_flag.stderr
