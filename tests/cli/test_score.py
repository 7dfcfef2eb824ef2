"""`aimq score` and `aimq predict` against the real API, daemon, Redis and RabbitMQ."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.helpers.paths import SAMPLES
from tests.helpers.platform import Platform
from tests.helpers.ports import free_port

AIMQ = str(Path(sys.executable).with_name("aimq"))
RECORD = {
    "model_group": "A",
    "model": 180,
    "kilometers": 1000,
    "fuel_type": "Diesel",
    "gear_type": "Manual",
    "vehicle_type": "Sedan Car",
    "age_in_months": 10,
    "color": "Black",
    "line": "Sportline",
    "doors": "4 to 5",
    "seats": "1 to 3",
    "climate": "Air Conditioning",
}


def _aimq(*args: str, api_url: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ}
    if api_url is not None:
        env["AIMQ_API_URL"] = api_url
    return subprocess.run([AIMQ, *args], capture_output=True, text=True, timeout=300, env=env, input=stdin)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("aimq: error: "), proc.stderr
    return lines[-1]


@pytest.mark.slow
def test_score_the_sample_file_end_to_end(platform: Platform, tmp_path: Path) -> None:
    source = tmp_path / "100_rows.xlsx"
    shutil.copyfile(SAMPLES / "100_rows.xlsx", source)
    proc = _aimq("score", str(source), api_url=platform.api_url)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "100_rows_scored.xlsx"
    scored = pd.read_excel(out, sheet_name="predictions", keep_default_na=False)
    assert len(scored) == 100 and scored["predicted_price"].notna().all()
    assert list(scored.columns[:12]) == list(pd.read_excel(source, keep_default_na=False).columns)

    # progress on stderr (no terminal here: one line per phase and tenth), the summary on stdout
    assert "uploaded 100_rows.xlsx" in proc.stderr
    assert "scored 100 rows" in proc.stderr
    summary = proc.stdout
    assert "100_rows.xlsx  (100 rows: 100 scored, 0 rejected)" in summary
    versions = {g: int(v) for g, v in scored.groupby("model_group")["model_version"].first().items()}
    assert "models:   " + ", ".join(f"{g} v{v}" for g, v in sorted(versions.items())) in summary
    assert f"result:   {out}" in summary
    assert f"run:      {platform.dagster_url}/runs/" in summary

    # the result is never overwritten without --force, and nothing is uploaded then
    again = _aimq("score", str(source), api_url=platform.api_url)
    line = _one_error_line(again)
    assert line == f"aimq: error: {out} already exists; pass --force to overwrite it, or --out to write elsewhere"
    assert "uploaded" not in again.stderr


@pytest.mark.slow
def test_score_a_csv_lists_the_rejected_rows_and_why(platform: Platform, tmp_path: Path) -> None:
    frame = pd.read_excel(SAMPLES / "100_rows.xlsx", keep_default_na=False)
    frame.loc[4, "fuel_type"] = "Steam"
    frame.loc[9, "model_group"] = "Z"
    source = tmp_path / "listings.csv"
    frame.to_csv(source, index=False)
    out = tmp_path / "priced.csv"
    proc = _aimq("score", str(source), "--out", str(out), "--api-url", platform.api_url, api_url="http://127.0.0.1:1")
    assert proc.returncode == 0, proc.stderr
    assert "listings.csv  (100 rows: 98 scored, 2 rejected)" in proc.stdout
    assert "rejected: by field fuel_type 1, model_group 1" in proc.stdout
    # spreadsheet numbering: the header is row 1, so data row 4 (0-based) is row 6
    assert "  row 6: fuel_type: unknown value 'Steam' (allowed: " in proc.stdout
    assert "  row 11: model_group: unknown value 'Z' (allowed: A, B, C)" in proc.stdout
    scored = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert scored["predicted_price"].isna().tolist() == [i in (4, 9) for i in range(100)]


@pytest.mark.slow
def test_score_refused_file_is_one_line(platform: Platform, tmp_path: Path) -> None:
    source = tmp_path / "photo.csv"
    source.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    line = _one_error_line(_aimq("score", str(source), api_url=platform.api_url))
    assert line.startswith("aimq: error: the API refused photo.csv: unsupported file type: ")
    assert not (tmp_path / "photo_scored.csv").exists()


@pytest.mark.slow
def test_score_a_file_without_the_columns_fails_in_one_line(platform: Platform, tmp_path: Path) -> None:
    source = tmp_path / "prices.csv"
    source.write_text("make,price\nFiat,1000\n")
    line = _one_error_line(_aimq("score", str(source), api_url=platform.api_url))
    assert line.startswith("aimq: error: scoring prices.csv failed: missing column(s): model_group, model, ")
    assert line.endswith(")") and f"(run: {platform.dagster_url}/runs/" in line
    assert not (tmp_path / "prices_scored.csv").exists()


def test_score_missing_file_and_api_down_are_one_line(tmp_path: Path) -> None:
    line = _one_error_line(_aimq("score", str(tmp_path / "nope.xlsx")))
    assert line == f"aimq: error: {tmp_path / 'nope.xlsx'}: no such file"
    source = tmp_path / "a.csv"
    source.write_text("model_group\nA\n")
    down = f"http://127.0.0.1:{free_port()}"
    line = _one_error_line(_aimq("score", str(source), "--api-url", down))
    assert line.startswith(f"aimq: error: the API at {down} is not reachable (")
    assert line.endswith("start it with 'aimq up', or point --api-url / AIMQ_API_URL at it")


@pytest.mark.slow
def test_predict_from_argument_and_stdin(platform: Platform) -> None:
    direct = httpx.post(f"{platform.api_url}/predict/onnx", json=RECORD).json()
    proc = _aimq("predict", json.dumps(RECORD), api_url=platform.api_url)
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.strip().splitlines()
    assert header.split() == ["#", "group", "version", "predicted", "price"]
    assert row.split() == ["0", "A", str(direct["model_version"]), f"{direct['predicted_price']:,.2f}"]

    batch = [RECORD, {**RECORD, "model_group": "C"}]
    proc = _aimq("predict", "--json", "--engine", "pickle", api_url=platform.api_url, stdin=json.dumps(batch))
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert [a["model_group"] for a in answer] == ["A", "C"]
    assert answer[0]["predicted_price"] == pytest.approx(direct["predicted_price"], rel=1e-4)


@pytest.mark.slow
def test_predict_errors_are_one_line(platform: Platform) -> None:
    line = _one_error_line(_aimq("predict", json.dumps({**RECORD, "fuel_type": "Steam"}), api_url=platform.api_url))
    assert line.startswith(
        "aimq: error: prediction refused: invalid request: fuel_type: unknown value 'Steam' (allowed: Petrol, "
    )
    batch = [RECORD, {**RECORD, "kilometers": -5}]
    line = _one_error_line(_aimq("predict", json.dumps(batch), api_url=platform.api_url))
    assert "records[1].kilometers: " in line
    line = _one_error_line(_aimq("predict", json.dumps({**RECORD, "model_group": "Q"}), api_url=platform.api_url))
    assert (
        line.startswith("aimq: error: prediction refused: ")
        and "model_group: unknown model group (allowed: A, B, C)" in line
    )
    line = _one_error_line(_aimq("predict", "{not json", api_url=platform.api_url))
    assert line.startswith("aimq: error: the input is not valid JSON: ")
