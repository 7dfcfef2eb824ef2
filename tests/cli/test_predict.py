"""`aimq predict` against the real API and Redis."""

from __future__ import annotations

import json

import httpx
import pytest

from aimq_serving.api.payloads import SAMPLE_ROWS
from tests.helpers.cli import one_error_line, run_aimq
from tests.helpers.platform import Platform

# The first row of the sample files, as the API documents it.
RECORD = SAMPLE_ROWS[0]


@pytest.mark.slow
def test_predict_from_argument_and_stdin(platform: Platform) -> None:
    direct = httpx.post(f"{platform.api_url}/predict/onnx", json=RECORD).json()
    proc = run_aimq("predict", json.dumps(RECORD), AIMQ_API_URL=platform.api_url)
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.strip().splitlines()
    assert header.split() == ["#", "group", "version", "predicted", "price", "90%", "range"]
    assert row.split() == [
        "0",
        "A",
        str(direct["model_version"]),
        f"{direct['predicted_price']:,.2f}",
        f"{direct['price_low']:,.2f}",
        "-",
        f"{direct['price_high']:,.2f}",
    ]
    assert direct["price_low"] < direct["predicted_price"] < direct["price_high"]

    # A record beyond the training data: the table says which of its numbers, under the rows.
    far = {**RECORD, "kilometers": 1_999_999}
    assert httpx.post(f"{platform.api_url}/predict/onnx", json=far).json()["out_of_range"] == ["kilometers"]
    proc = run_aimq("predict", json.dumps([RECORD, far]), AIMQ_API_URL=platform.api_url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[3:] == ["row 1: outside the training data's range: kilometers"]

    batch = [RECORD, {**RECORD, "model_group": "C"}]
    proc = run_aimq("predict", "--json", "--engine", "pickle", AIMQ_API_URL=platform.api_url, stdin=json.dumps(batch))
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert [a["model_group"] for a in answer] == ["A", "C"]
    assert answer[0]["predicted_price"] == pytest.approx(direct["predicted_price"], rel=1e-4)


@pytest.mark.slow
def test_predict_errors_are_one_line(platform: Platform) -> None:
    line = one_error_line(
        run_aimq("predict", json.dumps({**RECORD, "fuel_type": "Steam"}), AIMQ_API_URL=platform.api_url)
    )
    assert line.startswith(
        "aimq: error: prediction refused: invalid request: fuel_type: unknown value 'Steam' (allowed: Petrol, "
    )
    batch = [RECORD, {**RECORD, "kilometers": -5}]
    line = one_error_line(run_aimq("predict", json.dumps(batch), AIMQ_API_URL=platform.api_url))
    assert "records[1].kilometers: " in line
    line = one_error_line(
        run_aimq("predict", json.dumps({**RECORD, "model_group": "Q"}), AIMQ_API_URL=platform.api_url)
    )
    assert (
        line.startswith("aimq: error: prediction refused: ")
        and "model_group: unknown model group (allowed: A, B, C)" in line
    )
    line = one_error_line(run_aimq("predict", "{not json", AIMQ_API_URL=platform.api_url))
    assert line.startswith("aimq: error: the input is not valid JSON: ")
