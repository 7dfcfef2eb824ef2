"""Faithful results (issue 15): every kept cell comes back as uploaded, in value and kind, and
every message points at the sheet's own row.

Each case goes through the API and the real scoring job: POST /upload (real RabbitMQ, Redis) ->
the score_upload job in process (real Dagster instance) -> GET the result -> opened with openpyxl
(and calamine through fastexcel), and with LibreOffice where Debian's ``soffice`` is installed:
the uploads are re-saved by it (a third writer) and the results re-saved by it (a third reader).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastexcel
import openpyxl
import pytest
import xlsxwriter
from openpyxl.utils.escape import unescape

from aimq_serving import schema
from aimq_serving.model_store import ModelStore
from tests.helpers.corpus import good_row, with_cell
from tests.helpers.scored_uploads import needs_soffice, result_file, soffice_convert

# The kept (non-model) columns of the round-trip workbook, one per case of the issue.
EXTRA = ["asking", "when", "time_of_day", "duration", "text", "flag"]
ASKING = [15000, "n/a", 17250.5, "N/A", "NA", "None", "null", "#N/A", "ask", 9000, "nan", "15000"]  # cases 1, 2
WHEN = [
    dt.datetime(1900, 1, 15),
    dt.datetime(1900, 2, 28),
    dt.datetime(1900, 3, 1),
    dt.datetime(2024, 5, 1, 13, 45, 7),
]  # 3
TEXT = ["a\r\nb", "_x0041_", "x\x07y", "=1+1", "-5", "c\rd", "  spaced  ", '=HYPERLINK("http://x")', "@SUM(A1)"]  # 5


def _rows() -> list[list[Any]]:
    rows = []
    for i in range(12):
        rows.append(
            [
                ASKING[i],
                WHEN[i % 4],
                dt.time(13, 45) if i % 3 else dt.time(0, 0, 1),
                dt.timedelta(seconds=90 * (i + 1)),
                TEXT[i % len(TEXT)],
                i % 2 == 0,
                *good_row(i),
            ]
        )
    return rows


def xlsxwriter_book(path: Path, rows: list[list[Any]], *, header_at: int = 0, before: Callable | None = None) -> None:
    book = xlsxwriter.Workbook(str(path))
    if before is not None:
        before(book)
    sheet = book.add_worksheet("Data")
    formats = {
        dt.datetime: book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"}),
        dt.time: book.add_format({"num_format": "hh:mm:ss"}),
        dt.timedelta: book.add_format({"num_format": "[h]:mm:ss"}),
    }
    sheet.write_row(header_at, 0, [*EXTRA, *schema.INPUT_COLUMNS])
    for r, row in enumerate(rows, start=header_at + 1):
        for c, value in enumerate(row):
            if isinstance(value, str):
                sheet.write_string(r, c, value)  # text stays text, even "=1+1"
            elif isinstance(value, dt.timedelta):
                sheet.write_number(r, c, value.total_seconds() / 86_400, formats[dt.timedelta])
            elif isinstance(value, (dt.datetime, dt.time)):
                sheet.write_datetime(r, c, value, formats[type(value)])
            elif value is not None:
                sheet.write(r, c, value)
    book.close()


def openpyxl_book(path: Path, rows: list[list[Any]]) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Data"
    sheet.append([*EXTRA, *schema.INPUT_COLUMNS])
    for row in rows:
        # openpyxl refuses control characters (it cannot escape them): left out of its workbook.
        sheet.append([v.replace("\x07", "") if isinstance(v, str) else v for v in row])
        for cell in sheet[sheet.max_row]:
            if isinstance(cell.value, str) and cell.value.startswith("="):
                cell.data_type = "s"  # openpyxl would store it as a formula
    book.save(path)


def soffice_resave(path: Path, out_dir: Path) -> Path:
    """The workbook opened and saved again by LibreOffice (its own reader and writer)."""
    return soffice_convert(path, out_dir, "xlsx")


def cells(path: Path, sheet: str | None = None) -> list[dict[str, Any]]:
    """Rows below the header as openpyxl reads them, text decoded as OOXML escapes it (openpyxl
    leaves ``_xHHHH_`` as is; Excel, LibreOffice and calamine decode it)."""
    book = openpyxl.load_workbook(path, data_only=True)  # LibreOffice saves TRUE as the formula TRUE()
    ws = book[sheet] if sheet else book.worksheets[0]
    rows = [r for r in ws.iter_rows(values_only=True) if any(v is not None for v in r)]
    header = [str(h) for h in rows[0]]
    out = []
    for row in rows[1:]:
        out.append({h: unescape(v) if isinstance(v, str) else v for h, v in zip(header, row)})
    return out


def assert_kept_cells_equal(uploaded: list[dict[str, Any]], result: list[dict[str, Any]]) -> None:
    assert len(uploaded) == len(result)
    for i, (before, after) in enumerate(zip(uploaded, result)):
        for name in EXTRA:
            b, a = before.get(name), after.get(name)
            assert (type(a), a) == (type(b), b), f"row {i + 1}, {name}: uploaded {b!r}, result {a!r}"
        assert isinstance(after["predicted_price"], (int, float)), after  # scored


# --- the API and the scoring job (tests/helpers/scored_uploads.py) -------------------------------
@pytest.mark.parametrize("writer", [xlsxwriter_book, openpyxl_book], ids=["xlsxwriter", "openpyxl"])
def test_every_kept_cell_comes_back(writer, scored_upload, tmp_path: Path) -> None:
    """Cases 1-5 of the issue: markers, a number column with text, 1900 dates, times, durations,
    CR/CR LF, ``_xHHHH_``-looking text, control characters and formula-looking text."""
    source = tmp_path / "listings.xlsx"
    writer(source, _rows())
    status = scored_upload(source)
    result = result_file(status, tmp_path)
    assert (status["rows_total"], status["rows_rejected"]) == (12, 0)
    assert_kept_cells_equal(cells(source), cells(result, "predictions"))
    # calamine (fastexcel) reads the same text back, escapes decoded.
    text = fastexcel.read_excel(str(result)).load_sheet("predictions", dtypes="string").to_arrow().column("text")
    uploaded = fastexcel.read_excel(str(source)).load_sheet(0, dtypes="string").to_arrow().column("text")
    assert text.to_pylist() == uploaded.to_pylist()
    # The result holds text, never a formula.
    assert all(c.data_type != "f" for row in openpyxl.load_workbook(result)["predictions"].iter_rows() for c in row)


@needs_soffice
@pytest.mark.slow
def test_libreoffice_writes_and_reads_the_round_trip(scored_upload, tmp_path: Path) -> None:
    source = tmp_path / "made" / "listings.xlsx"
    source.parent.mkdir()
    xlsxwriter_book(source, _rows())
    resaved = soffice_resave(source, tmp_path / "lo-in")  # an upload LibreOffice wrote
    status = scored_upload(resaved)
    result = result_file(status, tmp_path)
    assert_kept_cells_equal(cells(resaved), cells(result, "predictions"))
    reopened = soffice_resave(result, tmp_path / "lo-out")  # the result as LibreOffice reads it
    assert_kept_cells_equal(cells(resaved), cells(reopened, "predictions"))


def test_a_bad_feature_cell_is_quoted(scored_upload, tmp_path: Path) -> None:
    rows = _rows()[:3]
    rows[1] = [*rows[1][: len(EXTRA)], *with_cell(good_row(1), "kilometers", "n/a")]
    source = tmp_path / "listings.xlsx"
    xlsxwriter_book(source, rows)
    status = scored_upload(source)
    rejected = cells(result_file(status, tmp_path), "rejected")
    assert [(r["row"], r["errors"]) for r in rejected] == [(3, "kilometers: 'n/a' is not a number")]


def test_rows_are_numbered_as_the_sheet_numbers_them(scored_upload, tmp_path: Path) -> None:
    """Case 7: the header on sheet row 3, an empty row between, a bad row on sheet row 6."""
    rows = _rows()[:3]
    rows.insert(1, [None] * len(rows[0]))  # sheet row 5 is empty
    rows[2] = [*rows[2][: len(EXTRA)], *with_cell(good_row(2), "fuel_type", "Steam")]  # sheet row 6
    source = tmp_path / "listings.xlsx"
    xlsxwriter_book(source, rows, header_at=2)
    status = scored_upload(source)
    assert (status["data_sheet"], status["header_row"]) == ("Data", 3)
    rejected = cells(result_file(status, tmp_path), "rejected")
    assert [r["row"] for r in rejected] == [6]
    assert rejected[0]["errors"].startswith("fuel_type: unknown value 'Steam'")


def test_the_data_is_found_below_a_title_and_after_notes_and_hidden_sheets(scored_upload, tmp_path: Path) -> None:
    """Case 8: a hidden sheet and an instructions sheet first, a title row above the header."""

    def before(book: Any) -> None:
        secret = book.add_worksheet("Secret")
        notes = book.add_worksheet("Instructions")
        notes.write(0, 0, "Instructions: fill in the sheet Data")
        notes.activate()  # xlsxwriter hides no active sheet
        secret.hide()

    rows = _rows()[:4]
    source = tmp_path / "listings.xlsx"
    xlsxwriter_book(source, rows, header_at=1, before=before)
    book = openpyxl.load_workbook(source)
    book["Data"]["A1"] = "Price list, December"
    book.save(source)
    status = scored_upload(source)
    assert (status["data_sheet"], status["header_row"], status["rows_total"]) == ("Data", 2, 4)

    missing = tmp_path / "no-data.xlsx"
    other = xlsxwriter.Workbook(str(missing))
    hidden = other.add_worksheet("Hidden notes")
    notes = other.add_worksheet("Instructions")
    notes.write(0, 0, "Instructions...")
    notes.activate()
    hidden.hide()
    other.add_worksheet("Prices").write_row(0, 0, ["model_group", "model"])
    other.close()
    failed = scored_upload(missing)
    assert failed["state"] == "failed"
    assert "missing column(s): model_group, model, kilometers" in failed["error"]
    assert "visible sheets: 'Instructions', 'Prices'" in failed["error"] and "Hidden notes" not in failed["error"]


def _csv(rows: list[list[Any]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


def test_csv_cells_come_back_and_formulas_are_neutralised(scored_upload, tmp_path: Path) -> None:
    """Case 6 (N/A, null, NA in a kept text column) and CSV injection; line numbers with a
    multi-line cell above the bad row."""
    kept = ["N/A", "null", "NA", "=1+1", "-5", "+3.5", "@SUM(A1)", '=HYPERLINK("http://x","y")', "two\nlines", ""]
    rows = [["note", *schema.INPUT_COLUMNS]] + [[k, *good_row(i)] for i, k in enumerate(kept)]
    rows.append(["bad", *with_cell(good_row(0), "kilometers", "n/a")])  # line 13: row 11 + 1 line break above
    source = tmp_path / "listings.csv"
    source.write_bytes(_csv(rows))
    status = scored_upload(source)
    result = list(csv.DictReader(io.StringIO(result_file(status, tmp_path, ".csv").read_text())))
    notes = [r["note"] for r in result]
    assert notes[:3] == ["N/A", "null", "NA"]  # no text taken for a missing value
    assert notes[3:10] == ["'=1+1", "-5", "+3.5", "'@SUM(A1)", '\'=HYPERLINK("http://x","y")', "two\nlines", ""]
    assert status["header_row"] == 1 and status["data_sheet"] is None
    assert status["rows_rejected"] == 1
    rejected = list(csv.DictReader(io.StringIO(status["rejected"].decode())))
    assert [(r["row"], r["errors"]) for r in rejected] == [("13", "kilometers: 'n/a' is not a number")]


@needs_soffice
@pytest.mark.slow
def test_libreoffice_opens_the_csv_result_as_text(scored_upload, tmp_path: Path) -> None:
    rows = [["note", *schema.INPUT_COLUMNS], ["=1+1", *good_row(0)], ["-5", *good_row(1)]]
    source = tmp_path / "listings.csv"
    source.write_bytes(_csv(rows))
    result = result_file(scored_upload(source), tmp_path, ".csv")
    opened = soffice_resave(result, tmp_path / "lo")
    values = [r[0] for r in openpyxl.load_workbook(opened).active.iter_rows(values_only=True)]
    assert values[1] != 2 and "1+1" in str(values[1])  # shown as text, never computed
    assert values[2] == -5  # a number stays a number


# --- the scoring function alone: parts of a few rows ---------------------------------------------
@pytest.fixture(scope="module")
def pinned(trained_store: ModelStore):
    from aimq_pipelines.uploads.scoring import PinnedModels
    from aimq_serving.loaded_models import ModelCache

    return PinnedModels.from_cache(ModelCache(trained_store))


def test_a_text_cell_in_a_later_part_changes_no_other_cell(pinned, tmp_path: Path) -> None:
    """Types are decided per part: the part holding the text cell reads the column cell by cell, the
    others as numbers; every cell comes back in its kind, whichever part it was in."""
    from aimq_pipelines.uploads.input_table import InputTable
    from aimq_pipelines.uploads.scoring import score_file

    rows = [[*_rows()[i % 12][:1], *[None] * (len(EXTRA) - 1), *good_row(i % 100)] for i in range(120)]
    for i, row in enumerate(rows):
        row[0] = "ask" if i == 95 else 10_000.5 + i
    rows[30][0] = None  # an empty cell in a number column stays empty
    source = tmp_path / "listings.xlsx"
    xlsxwriter_book(source, rows)
    result_path, rejected_path = tmp_path / "result.xlsx", tmp_path / "rejected.csv"
    result = score_file(
        InputTable.open(source, "xlsx", work_dir=tmp_path),
        result_path=result_path,
        rejected_path=rejected_path,
        models=pinned,
        max_rows=1000,
        chunk_rows=40,
        work_dir=tmp_path,
    )
    assert (result.rows_total, result.rows_rejected, result.header_row) == (120, 0, 1)
    asking = [r["asking"] for r in cells(result_path, "predictions")]
    assert asking == [r[0] for r in rows]
    assert all(type(a) is type(r[0]) for a, r in zip(asking, rows))
