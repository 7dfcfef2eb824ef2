"""Cells of mixed kinds (issue 15): only the columns that mix kinds are read once per kind, from a copy
of their cells; every other column comes out as fastexcel's strict reading gives it."""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from pathlib import Path
from typing import Any

import fastexcel
import pyarrow as pa
import pytest
import xlsxwriter

from aimq_tabular import xlsx_cells
from aimq_tabular.xlsx_cells import BOOLEAN, DATETIME, MIXED, NUMBER, TEXT
from aimq_tabular.xlsx_columns import PartSheet, column_letters
from aimq_tabular.xlsx_reader import iter_xlsx_batches
from aimq_tabular.xlsx_writer import column_letters as writer_letters

SHEET_XML = "xl/worksheets/sheet1.xml"


def book(path: Path, header: list[str], rows: list[list[Any]], *, first_column: int = 0) -> Path:
    """A workbook as xlsxwriter writes it: dates and durations as formatted numbers, text as text."""
    workbook = xlsxwriter.Workbook(str(path))
    sheet = workbook.add_worksheet("Data")
    formats = {
        dt.datetime: workbook.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"}),
        dt.timedelta: workbook.add_format({"num_format": "[h]:mm:ss"}),
    }
    sheet.write_row(0, first_column, header)
    for r, row in enumerate(rows, start=1):
        for c, value in enumerate(row, start=first_column):
            if isinstance(value, str):
                sheet.write_string(r, c, value)
            elif isinstance(value, dt.timedelta):
                sheet.write_number(r, c, value.total_seconds() / 86_400, formats[dt.timedelta])
            elif isinstance(value, dt.datetime):
                sheet.write_datetime(r, c, value, formats[dt.datetime])
            elif value is not None:
                sheet.write(r, c, value)
    workbook.close()
    return path


def read(path: Path, **kwargs: Any) -> list[pa.RecordBatch]:
    return list(iter_xlsx_batches(path, **kwargs))


def cells(column: pa.Array) -> list[tuple[int, Any] | None]:
    """A MIXED column as (kind, value) per cell, the value taken from the kind's own field."""
    field = {NUMBER: "number", TEXT: "text", BOOLEAN: "boolean", DATETIME: "datetime"}
    return [None if c is None else (c["kind"], c[field[c["kind"]]]) for c in column.to_pylist()]


DAY = dt.datetime(2024, 5, 1, 13, 45, 7)


def test_only_the_columns_that_mix_kinds_are_read_cell_by_cell(tmp_path: Path) -> None:
    header = ["price", "km", "note", "listed", "flag"]
    rows = [
        [15000, 120.5, "first", DAY, True],
        ["ask", 80.0, "n/a", DAY + dt.timedelta(days=1), False],
        [9000, 95.0, "third", DAY + dt.timedelta(days=2), True],
    ]
    [batch] = read(book(tmp_path / "one.xlsx", header, rows))
    assert batch.schema.names == header
    assert batch.schema.field("price").type == MIXED
    assert cells(batch.column("price")) == [(NUMBER, 15000.0), (TEXT, "ask"), (NUMBER, 9000.0)]
    # The columns of one kind, as strict reading reads them: numbers, text, dates, booleans.
    assert batch.column("km").type == pa.float64() and batch.column("km").to_pylist() == [120.5, 80.0, 95.0]
    assert batch.column("note").to_pylist() == ["first", "n/a", "third"]  # "n/a" in a text column is text
    assert batch.column("listed").type == pa.timestamp("ms")
    assert batch.column("listed").to_pylist() == [DAY + dt.timedelta(days=d) for d in range(3)]
    assert batch.column("flag").to_pylist() == [True, False, True]


def test_a_date_column_mixed_with_text_beside_dates_and_durations_of_one_kind(tmp_path: Path) -> None:
    header = ["when", "listed", "took"]
    rows = [
        [DAY, DAY, dt.timedelta(minutes=90)],
        ["unknown", DAY, dt.timedelta(hours=30)],
        [None, DAY, None],
        [dt.datetime(1900, 3, 1), DAY, dt.timedelta(seconds=1)],
    ]
    [batch] = read(book(tmp_path / "dates.xlsx", header, rows))
    assert batch.schema.field("when").type == MIXED
    assert cells(batch.column("when")) == [
        (DATETIME, DAY),
        (TEXT, "unknown"),
        None,
        (DATETIME, dt.datetime(1900, 3, 1)),
    ]
    # Date-formatted cells only: the type calamine guesses tells dates from durations.
    assert batch.column("listed").type == pa.timestamp("ms") and batch.column("listed").to_pylist() == [DAY] * 4
    assert batch.column("took").type == pa.duration("ms")
    assert batch.column("took").to_pylist() == [
        dt.timedelta(minutes=90),
        dt.timedelta(hours=30),
        None,
        dt.timedelta(seconds=1),
    ]


def test_numbers_beyond_any_date_beside_date_cells_keep_their_kinds(tmp_path: Path) -> None:
    """calamine panics reading a number beyond any date (-2.3e16, 1e242) as a date in a part with
    date cells; its columns' dates are then read from a copy without such numbers, and every cell
    keeps its kind and value."""
    header = ["km", "note", "listed"]
    rows = [
        [-2.333458854653391e16, "a", DAY],
        [dt.timedelta(days=400, seconds=26), 1.379653851648899e242, "n/a"],
        [5.0, "b", dt.datetime(2707, 5, 20, 1, 26, 27)],
    ]
    [batch] = read(book(tmp_path / "beyond.xlsx", header, rows))
    assert cells(batch.column("km")) == [
        (NUMBER, -2.333458854653391e16),
        (DATETIME, dt.datetime(1901, 2, 3, 0, 0, 26)),  # a duration in a mixed column: its date-time
        (NUMBER, 5.0),
    ]
    assert cells(batch.column("note")) == [(TEXT, "a"), (NUMBER, 1.379653851648899e242), (TEXT, "b")]
    later = dt.datetime(2707, 5, 20, 1, 26, 27)
    assert cells(batch.column("listed")) == [(DATETIME, DAY), (TEXT, "n/a"), (DATETIME, later)]


def test_markers_in_one_column_only(tmp_path: Path) -> None:
    """``n/a`` and ``nan`` are missing values and NaN to fastexcel, even strictly: the column with them
    comes back cell by cell; a number column with empty cells stays a number column."""
    header = ["price", "km", "seats"]
    rows = [[15000, 10.0, 5], ["n/a", None, 4], [17250.5, 30.0, None], ["nan", 40.0, 2]]
    [batch] = read(book(tmp_path / "markers.xlsx", header, rows))
    assert batch.schema.field("price").type == MIXED
    assert cells(batch.column("price")) == [(NUMBER, 15000.0), (TEXT, "n/a"), (NUMBER, 17250.5), (TEXT, "nan")]
    assert batch.column("km").type == pa.float64() and batch.column("km").to_pylist() == [10.0, None, 30.0, 40.0]
    assert batch.column("seats").to_pylist() == [5.0, 4.0, None, 2.0]


def test_a_table_that_does_not_start_in_column_a(tmp_path: Path) -> None:
    """Columns are chosen by their place in the sheet: a table starting in column C reads as in A."""
    header = ["price", "km", "listed", "note"]
    rows = [[15000, None, DAY, "a"], ["ask", 20.0, DAY, "b"], ["n/a", 30.0, "soon", "c"], [9000, 40.0, DAY, "d"]]
    in_a = read(book(tmp_path / "a.xlsx", header, rows))
    in_c = read(book(tmp_path / "c.xlsx", header, rows, first_column=2))
    assert in_c[0].schema.field("price").type == MIXED and in_c[0].schema.field("listed").type == MIXED
    assert [b.to_pylist() for b in in_c] == [b.to_pylist() for b in in_a]
    assert [b.schema for b in in_c] == [b.schema for b in in_a]


# Blocks of 16 bytes hold at most one row end: parts of exactly 25 rows.
PARTS = {"rows_per_part": 25, "block_bytes": 16}


def _rows_of_parts() -> list[list[Any]]:
    """Five parts of 25 rows: price mixes kinds in the first and fourth, not in the others."""
    rows: list[list[Any]] = []
    for i in range(125):
        price: Any = 10_000.0 + i
        if i in (3, 80):
            price = "ask"
        elif i == 60:
            price = "n/a"  # the third part: numbers and a marker
        elif 25 <= i < 50 and i % 5 == 0 or i >= 100:
            price = None  # the second part: numbers and empty cells; the fifth: empty cells only
        rows.append([price, float(i), f"note {i}", "" if i == 30 else DAY])
    return rows


def test_a_column_refused_in_an_earlier_part_reads_as_if_the_part_were_alone(tmp_path: Path) -> None:
    """A column an earlier part refused is read as text at once in the later parts, then worked out:
    each part comes back exactly as the same rows do in a file of their own."""
    header = ["price", "km", "note", "listed"]
    rows = _rows_of_parts()
    parts = read(book(tmp_path / "all.xlsx", header, rows), **PARTS)
    assert [b.num_rows for b in parts] == [25] * 5
    for k, part in enumerate(parts):
        [alone] = read(book(tmp_path / f"part-{k}.xlsx", header, rows[25 * k : 25 * (k + 1)]))
        assert part.schema == alone.schema, k
        assert part.to_pylist() == alone.to_pylist(), k
    assert [b.schema.field("price").type == MIXED for b in parts] == [True, False, True, True, False]
    assert parts[1].column("price").type == pa.float64()
    assert parts[4].column("price").type == pa.string() and parts[4].column("price").null_count == 25


def test_empty_text_in_a_date_column_comes_back_as_text_only_beside_a_column_of_mixed_kinds(tmp_path: Path) -> None:
    """As the first faithful reader did: a part with a column of mixed kinds is worked out cell by
    cell in every column, and there a date column's cells of empty text are text cells; in a part
    without one they are missing values, as fastexcel reads them."""
    rows = [[15000, DAY], [16000, ""], ["ask", DAY], [17000, ""]]
    plain, beside = read(book(tmp_path / "two.xlsx", ["price", "listed"], rows), rows_per_part=2, block_bytes=16)
    assert plain.column("listed").type == pa.timestamp("ms") and plain.column("listed").to_pylist() == [DAY, None]
    assert cells(beside.column("listed")) == [(DATETIME, DAY), (TEXT, "")]


def _rewritten(path: Path, out: Path, rewrite: Any) -> Path:
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, rewrite(data) if info.filename == SHEET_XML else data)
    return out


@pytest.mark.parametrize(
    "rewrite",
    [
        pytest.param(lambda x: re.sub(rb'(<c) r="[A-Z]+\d+"', rb"\1", x), id="cells-without-references"),
        pytest.param(lambda x: re.sub(rb'<c r="([A-Z]+\d+)"([^>]*?)(/?)>', rb'<c\2 r="\1"\3>', x), id="reference-last"),
        pytest.param(
            lambda x: re.sub(
                rb"<(/?)(?!x:|\?)(\w+)(?=[\s>/])",
                rb"<\1x:\2",
                x.replace(b'<worksheet xmlns="', b'<x:worksheet xmlns:x="'),
            ),
            id="prefixed-elements",
        ),
    ],
)
def test_sheets_written_otherwise_read_the_same(tmp_path: Path, rewrite: Any) -> None:
    """A sheet whose cells carry no reference (or not first) cannot be copied column by column: its
    parts are read per kind whole, with the same result; a sheet with prefixed elements is copied."""
    header = ["price", "km", "note", "listed"]
    # No empty cells: a cell without a reference is placed after the one written before it.
    rows = [["-" if value in (None, "") else value for value in row] for row in _rows_of_parts()]
    plain = book(tmp_path / "plain.xlsx", header, rows)
    other = _rewritten(plain, tmp_path / "other.xlsx", rewrite)
    with zipfile.ZipFile(other) as archive:
        assert archive.read(SHEET_XML) != zipfile.ZipFile(plain).read(SHEET_XML)
    expected = read(plain, **PARTS)
    got = read(other, **PARTS)
    assert [b.schema for b in got] == [b.schema for b in expected]
    assert [b.to_pylist() for b in got] == [b.to_pylist() for b in expected]


def test_a_refusal_fastexcel_does_not_name_reads_every_column_cell_by_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refused column is taken from fastexcel's message; a message in another form (a later
    fastexcel) costs time, never a cell."""
    path = book(tmp_path / "one.xlsx", ["price", "km", "note"], [[15000, 1.0, "a"], ["ask", None, "b"]])
    expected = read(path)
    monkeypatch.setattr(xlsx_cells, "_REFUSED_COLUMN", re.compile(r"(?!)"))
    got = read(path)
    assert got[0].schema == expected[0].schema and got[0].to_pylist() == expected[0].to_pylist()


def test_the_copy_holds_the_header_row_and_the_chosen_columns(tmp_path: Path) -> None:
    header = ["a", "b", "c", "d"]
    path = book(tmp_path / "wide.xlsx", header, [[1, "x", 3, "y"], [5, "z", None, "w"]], first_column=1)
    part = PartSheet(path, SHEET_XML)
    assert part.every_cell_has_a_reference()
    copy = fastexcel.read_excel(part.workbook_of([2, 4])).load_sheet("Data", eager=True)
    assert copy.schema.names == header  # the header row, whole
    assert copy.to_pydict() == {"a": [None, None], "b": ["x", "z"], "c": [None, None], "d": ["y", "w"]}
    without = _rewritten(path, tmp_path / "without.xlsx", lambda x: x.replace(b'<c r="C3"', b"<c"))
    assert not PartSheet(without, SHEET_XML).every_cell_has_a_reference()


def test_column_letters_are_the_writers() -> None:
    letters = writer_letters(16_384)
    assert [column_letters(i).decode() for i in (0, 25, 26, 701, 702, 16_383)] == [
        letters[i] for i in (0, 25, 26, 701, 702, 16_383)
    ]
