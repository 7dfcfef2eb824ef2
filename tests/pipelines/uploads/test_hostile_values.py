"""Hostile values in the features, through an xlsx, a CSV and the JSON API alike. For every row:
the file never fails because of a value; a bad row is rejected with a reason naming the field and
the sheet's row; batch and online agree (both price it, at the same price, or both refuse it), and,
for numbers and text, refuse it with the same words."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import fastexcel
import pandas as pd
import pytest
import xlsxwriter
from fastapi.testclient import TestClient

from aimq_pipelines.uploads.input_table import InputTable
from aimq_pipelines.uploads.scoring import PinnedModels, score_file
from aimq_serving import schema
from aimq_serving.loaded_models import ModelCache
from aimq_serving.model_store import ModelStore
from tests.helpers.paths import SAMPLES

BASE = fastexcel.read_excel(str(SAMPLES / "1_row.xlsx")).load_sheet(0).to_pandas().iloc[0].to_dict()


class ExcelError(str):
    """An Excel error cell (``#DIV/0!``): a formula whose saved value is the error."""


# The findings and what a first generated run (hypothesis) found: every feature's hostile kinds.
CORPUS = [
    ("model", 1e20),
    ("kilometers", -0.0),
    ("kilometers", 1e308),
    ("kilometers", math.inf),
    ("age_in_months", 0.5),
    ("age_in_months", 2.0**70),
    ("model", " 180 "),
    ("kilometers", "1_000"),
    ("kilometers", "nan"),
    ("fuel_type", "diesel"),
    ("fuel_type", " Diesel "),
    ("kilometers", True),
    ("model", ExcelError("#DIV/0!")),
    ("kilometers", dt.datetime(2024, 1, 31)),
    ("color", "x" * 40_000),
]


@pytest.fixture(scope="module")
def pinned(trained_store: ModelStore) -> PinnedModels:
    return PinnedModels.from_cache(ModelCache(trained_store))


def _xlsx(path: Path, rows: list[dict[str, Any]]) -> None:
    with xlsxwriter.Workbook(path, {"nan_inf_to_errors": True}) as book:
        sheet = book.add_worksheet()
        sheet.write_row(0, 0, schema.INPUT_COLUMNS)
        date = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        for r, row in enumerate(rows, start=1):
            for c, name in enumerate(schema.INPUT_COLUMNS):
                value = row[name]
                if isinstance(value, ExcelError):
                    sheet.write_formula(r, c, "=1/0", None, str(value))
                elif isinstance(value, dt.datetime):
                    sheet.write_datetime(r, c, value, date)
                elif isinstance(value, str):
                    sheet.write_string(r, c, value)
                else:
                    sheet.write(r, c, value)


def _csv_text(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _json_value(value: Any, fmt: str) -> Any:
    """The value as a JSON client sends the same cell: a CSV cell is text; an xlsx cell its kind."""
    if fmt == "csv":
        return _csv_text(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, float) and not math.isfinite(value):
        return "#NUM!" if math.isnan(value) else "#DIV/0!"  # what xlsxwriter writes for them
    if isinstance(value, float):
        return float(f"{value:.16g}")  # what xlsxwriter saves: 16 significant digits
    return str(value) if isinstance(value, ExcelError) else value


def _score(tmp_path: Path, rows: list[dict[str, Any]], fmt: str, pinned: PinnedModels) -> pd.DataFrame:
    source = tmp_path / f"hostile.{fmt}"
    if fmt == "xlsx":
        _xlsx(source, rows)
    else:
        with open(source, "w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(schema.INPUT_COLUMNS)
            out.writerows([[_csv_text(r[c]) for c in schema.INPUT_COLUMNS] for r in rows])
    result_path, rejected_path = tmp_path / f"result.{fmt}", tmp_path / "rejected.csv"
    result = score_file(
        InputTable.open(source, fmt, work_dir=tmp_path),
        result_path=result_path,
        rejected_path=rejected_path,
        models=pinned,
        max_rows=1000,
        work_dir=tmp_path,
    )
    assert result.rows_total == len(rows)
    if fmt == "xlsx":
        prices = fastexcel.read_excel(str(result_path)).load_sheet(0).to_pandas()["predicted_price"]
    else:
        prices = pd.read_csv(result_path, usecols=["predicted_price"])["predicted_price"]
    with open(rejected_path, newline="", encoding="utf-8") as fh:
        reasons = {int(r["row"]): r["errors"] for r in csv.DictReader(fh)}
    return pd.DataFrame({"price": prices, "reason": [reasons.get(i + 2) for i in range(len(rows))]})


def _check(tmp_path: Path, cases: list[tuple[str, Any]], pinned: PinnedModels, client: TestClient) -> None:
    rows = [{**BASE, field: value} for field, value in cases]
    for fmt in ("xlsx", "csv"):
        batch = _score(tmp_path, rows, fmt, pinned)
        for i, (field, value) in enumerate(cases):
            record = {**{k: json.loads(json.dumps(v)) for k, v in BASE.items()}, field: _json_value(value, fmt)}
            for name in ("model", "kilometers", "age_in_months"):
                if name != field:
                    record[name] = int(record[name])
            online = client.post("/predict/onnx", content=json.dumps(record, allow_nan=False))
            price, reason = batch["price"][i], batch["reason"][i]
            where = (fmt, field, value, reason, online.text[:300])
            if online.status_code == 200:
                assert reason is None and price == online.json()["predicted_price"], where
                continue
            assert online.status_code == 422, where
            (error,) = online.json()["errors"]
            assert error["field"] == field, where
            assert reason is not None and reason.startswith(f"{field}: "), where  # its row: i + 2 above
            if fmt == "csv" or isinstance(value, (float, str)) and not isinstance(value, ExcelError):
                if not (isinstance(value, str) and len(value) > 200):  # long text is cut in the middle in files
                    assert reason.startswith(f"{field}: {error['message']}"), where


@pytest.mark.parametrize("case", CORPUS, ids=[f"{f}={v!r:.20}" for f, v in CORPUS])
def test_corpus(tmp_path: Path, pinned: PinnedModels, api_client: TestClient, case: tuple[str, Any]) -> None:
    _check(tmp_path, [case], pinned, api_client)
