"""`aimq score` against the real API, daemon, Redis and RabbitMQ."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers.cli import one_error_line, run_aimq
from tests.helpers.paths import SAMPLES
from tests.helpers.platform import Platform
from tests.helpers.ports import free_port


@pytest.mark.slow
def test_score_the_sample_file_end_to_end(platform: Platform, tmp_path: Path) -> None:
    source = tmp_path / "100_rows.xlsx"
    shutil.copyfile(SAMPLES / "100_rows.xlsx", source)
    proc = run_aimq("score", str(source), AIMQ_API_URL=platform.api_url)
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
    assert "drift: none found (100 rows judged)" in summary
    assert f"run:      {platform.dagster_url}/runs/" in summary

    # the result is never overwritten without --force, and nothing is uploaded then
    again = run_aimq("score", str(source), AIMQ_API_URL=platform.api_url)
    line = one_error_line(again)
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
    proc = run_aimq(
        "score", str(source), "--out", str(out), "--api-url", platform.api_url, AIMQ_API_URL="http://127.0.0.1:1"
    )
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
    line = one_error_line(run_aimq("score", str(source), AIMQ_API_URL=platform.api_url))
    assert line.startswith("aimq: error: the API refused photo.csv: unsupported file type: ")
    assert not (tmp_path / "photo_scored.csv").exists()


@pytest.mark.slow
def test_score_a_file_without_the_columns_fails_in_one_line(platform: Platform, tmp_path: Path) -> None:
    source = tmp_path / "prices.csv"
    source.write_text("make,price\nFiat,1000\n")
    line = one_error_line(run_aimq("score", str(source), AIMQ_API_URL=platform.api_url))
    assert line.startswith("aimq: error: scoring prices.csv failed: missing column(s): model_group, model, ")
    assert line.endswith(")") and f"(run: {platform.dagster_url}/runs/" in line
    assert not (tmp_path / "prices_scored.csv").exists()


def test_score_missing_file_and_api_down_are_one_line(tmp_path: Path) -> None:
    line = one_error_line(run_aimq("score", str(tmp_path / "nope.xlsx")))
    assert line == f"aimq: error: {tmp_path / 'nope.xlsx'}: no such file"
    source = tmp_path / "a.csv"
    source.write_text("model_group\nA\n")
    down = f"http://127.0.0.1:{free_port()}"
    line = one_error_line(run_aimq("score", str(source), "--api-url", down))
    assert line.startswith(f"aimq: error: the API at {down} is not reachable (")
    assert line.endswith("start it with 'aimq up', or point --api-url / AIMQ_API_URL at it")
