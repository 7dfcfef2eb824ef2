"""Hostile values in the features, and the check that batch (xlsx, CSV) and online (/predict/onnx)
judge each of them alike: the fixed corpus and the generated cases of
tests/pipelines/uploads/test_hostile_values.py share these.

A value is a cell as the user puts it in a sheet: a Python number is a number cell, a bool a
boolean cell, a datetime a date cell, a time a time-of-day cell, a timedelta a duration cell, an
``ExcelError`` an error cell, a str a text cell. In a CSV each becomes the text a spreadsheet
saves for it; a JSON client sends what the sheet shows (``json_value``).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fastexcel
import pandas as pd
import xlsxwriter
from fastapi.testclient import TestClient
from hypothesis import strategies as st

from aimq_pipelines.uploads.input_table import InputTable
from aimq_pipelines.uploads.scoring import PinnedModels, score_file
from aimq_serving import schema, values
from tests.helpers.paths import SAMPLES

BASE: dict[str, Any] = fastexcel.read_excel(str(SAMPLES / "1_row.xlsx")).load_sheet(0).to_pandas().iloc[0].to_dict()
_WHOLE = ("model", *schema.NUMERIC_BY_NAME)
# Longer reasons are cut in the middle in the rejected list (scoring._describe): compared by start.
_QUOTED_IN_FULL = 200


class ExcelError(str):
    """An Excel error cell (``#DIV/0!``): a formula whose saved value is the error."""


Case = tuple[str, Any]  # (feature, value)

# --- generated values ------------------------------------------------------------------------
_EXCEL_ERRORS = ("#DIV/0!", "#VALUE!", "#N/A", "#NUM!", "#REF!", "#NAME?", "#NULL!")
# Control characters a sheet's XML can carry escaped (xlsxwriter writes _xHHHH_); CR and LF are
# left out: a CSV row is numbered by its first line, so a line break moves the later rows' numbers.
_CONTROL = "\x00\x01\x07\x08\t\x0b\x0c\x1b\x1f\x7f"


def _spaced(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pad = st.sampled_from(["", " ", "  ", "\t"])
    return st.tuples(pad, text, pad).map("".join)


_numbers: st.SearchStrategy[Any] = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),  # past int64 and past what a double holds exactly
    st.integers(min_value=0, max_value=2_000_000),  # valid kilometers (and ages, engine models in range)
    # inf, NaN, -0.0, 1e308, subnormals; but not the largest doubles, which xlsxwriter's 16 digits
    # round past the largest one (a workbook Excel would not write): calamine reads them as inf.
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda f: math.isinf(f) or math.isfinite(float(f"{f:.16g}"))),
    st.floats(min_value=-10.0, max_value=700.0).map(lambda f: round(f, 2)),  # fractions of a whole number
    st.sampled_from([-0.0, 0.0, 1e20, 2.0**63, 2.0**64, 0.5, 1e-300]),
)
_whole_numbers_as_text = st.integers(min_value=-(2**70), max_value=2**70).map(str)
_numbers_as_text = st.one_of(
    _whole_numbers_as_text,
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1_000", "1,000", "1e3", "0x10", "١٢", "+5", ".5", "5.", "nan", "-inf", "Infinity"]),
)
_categories = [str(v) for f in schema.CATEGORICAL for v in f.values]
_other_case = st.sampled_from(_categories).flatmap(
    lambda v: st.sampled_from([v, v.lower(), v.upper(), v.swapcase(), v.title()])
)
_texts = st.one_of(
    _spaced(_other_case),
    _spaced(_numbers_as_text),
    st.text(alphabet=st.sampled_from(_CONTROL + "ab #/ÿé中"), max_size=12),
    st.integers(min_value=201, max_value=40_000).map(lambda n: "x" * n),  # very long text
)
_other_kinds = st.one_of(
    st.booleans(),
    st.datetimes(min_value=dt.datetime(1900, 3, 1), max_value=dt.datetime(9999, 12, 31)).map(
        lambda d: d.replace(microsecond=0)
    ),
    st.times().map(lambda t: t.replace(microsecond=0)),
    st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(days=1000)).map(
        lambda d: dt.timedelta(seconds=int(d.total_seconds()))
    ),
    st.sampled_from(_EXCEL_ERRORS).map(ExcelError),
)
hostile_values: st.SearchStrategy[Any] = st.one_of(_numbers, _texts, _other_kinds)
hostile_cases: st.SearchStrategy[Case] = st.tuples(st.sampled_from(schema.FEATURE_FIELDS), hostile_values)


# --- the same cell in a workbook, a CSV and a JSON request -------------------------------------
def write_xlsx(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """``rows`` as a workbook, each value in the cell type it stands for."""
    with xlsxwriter.Workbook(path, {"nan_inf_to_errors": True}) as book:
        sheet = book.add_worksheet()
        sheet.write_row(0, 0, schema.INPUT_COLUMNS)
        formats = {
            dt.datetime: book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"}),
            dt.time: book.add_format({"num_format": "hh:mm:ss"}),
            dt.timedelta: book.add_format({"num_format": "[h]:mm:ss"}),
        }
        for r, row in enumerate(rows, start=1):
            for c, name in enumerate(schema.INPUT_COLUMNS):
                value = row[name]
                if isinstance(value, ExcelError):
                    sheet.write_formula(r, c, "=1/0", None, str(value))
                elif isinstance(value, (dt.datetime, dt.time, dt.timedelta)):
                    sheet.write_datetime(r, c, value, formats[type(value)])
                elif isinstance(value, bool):
                    sheet.write_boolean(r, c, value)
                elif isinstance(value, str):
                    sheet.write_string(r, c, value)
                else:
                    sheet.write_number(r, c, value)


def csv_text(value: Any) -> str:
    """A cell as a spreadsheet saves it in a CSV."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return str(value)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(schema.INPUT_COLUMNS)
        out.writerows([[csv_text(r[c]) for c in schema.INPUT_COLUMNS] for r in rows])


def json_value(value: Any, fmt: str) -> Any:
    """The value as a JSON client sends the same cell: a CSV cell is text; an xlsx cell its kind
    (JSON has no dates, times or error cells: those are sent as the text the sheet shows)."""
    if fmt == "csv":
        return csv_text(value)
    if isinstance(value, (ExcelError, dt.time, dt.timedelta)):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        if not math.isfinite(number):
            return "#NUM!" if math.isnan(number) else "#DIV/0!"  # what xlsxwriter writes for them
        return float(f"{number:.16g}")  # what xlsxwriter saves: 16 significant digits
    return value


def batch_outcomes(
    work: Path, rows: Sequence[dict[str, Any]], fmt: str, pinned: PinnedModels
) -> tuple[list[float | None], list[str | None]]:
    """Score ``rows`` as one file: each row's price, and each row's rejection reason (the rejected
    list's rows are the sheet's: data starts at row 2, below the header)."""
    source = work / f"hostile.{fmt}"
    (write_xlsx if fmt == "xlsx" else write_csv)(source, rows)
    result_path, rejected_path = work / f"result.{fmt}", work / "rejected.csv"
    result = score_file(
        InputTable.open(source, fmt, work_dir=work),  # type: ignore[arg-type]
        result_path=result_path,
        rejected_path=rejected_path,
        models=pinned,
        max_rows=1000,
        work_dir=work,
    )
    assert result.rows_total == len(rows), "a row was lost, or a blank one appeared"
    if fmt == "xlsx":
        prices = fastexcel.read_excel(str(result_path)).load_sheet(0).to_pandas()["predicted_price"]
    else:
        prices = pd.read_csv(result_path, usecols=["predicted_price"])["predicted_price"]
    assert len(prices) == len(rows), "the result lost or added rows"
    with open(rejected_path, newline="", encoding="utf-8") as fh:
        reasons = {int(r["row"]): r["errors"] for r in csv.DictReader(fh)}
    assert set(reasons) <= set(range(2, len(rows) + 2)), reasons.keys()
    return [None if pd.isna(p) else float(p) for p in prices], [reasons.get(i + 2) for i in range(len(rows))]


def _quoted_alike(value: Any) -> bool:
    """Whether both sides must word the refusal of ``value`` identically. Times and durations are
    quoted as the date-times calamine reads them (docs/batch.md, known limits); long text is cut."""
    if isinstance(value, (dt.time, dt.timedelta)):
        return False
    return not (isinstance(value, str) and len(value) > _QUOTED_IN_FULL)


def check_agreement(work: Path, cases: Sequence[Case], pinned: PinnedModels, client: TestClient) -> None:
    """Each case as one row of an xlsx and of a CSV, and as a /predict/onnx request: the file
    never fails; every row is either priced or rejected, never both, never neither; a row online
    prices is priced at the same price; a row online refuses (422, naming the field) is rejected
    with a reason naming the field on the sheet's row, in the same words, quoting the value."""
    rows = [{**BASE, field: value} for field, value in cases]
    for fmt in ("xlsx", "csv"):
        prices, reasons = batch_outcomes(work, rows, fmt, pinned)
        for i, (field, value) in enumerate(cases):
            sent = json_value(value, fmt)
            record = {k: int(v) if k in _WHOLE else v for k, v in BASE.items()}
            record[field] = sent
            online = client.post("/predict/onnx", content=json.dumps(record, allow_nan=False))
            price, reason = prices[i], reasons[i]
            where = (fmt, f"row {i + 2}", field, value, reason, price, online.text[:300])
            assert (price is None) != (reason is None), where  # priced or rejected: exactly one
            if online.status_code == 200:
                assert reason is None and price == online.json()["predicted_price"], where
                continue
            assert online.status_code == 422, where
            (error,) = online.json()["errors"]
            assert error["field"] == field, where
            assert reason is not None and reason.startswith(f"{field}: "), where
            if _quoted_alike(value):
                assert reason.startswith(f"{field}: {error['message']}"), where
                if not values.is_missing(sent):
                    assert values.shown(sent) in reason, where  # the value as the user typed it
