"""The xlsx writer and the bounded-memory reader, checked against two independent readers:
fastexcel on the whole sheet, and openpyxl (a strict XML reader)."""

from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path

import fastexcel
import numpy as np
import openpyxl
import pyarrow as pa
import pytest
import xlsxwriter

from aimq_tabular.xlsx_reader import XlsxFormatError, iter_xlsx_batches
from aimq_tabular.xlsx_writer import XlsxTableWriter, XlsxWriteError, column_letters
from tests.helpers.paths import SAMPLES


def read_all(path: Path, **kwargs) -> pa.Table:
    return pa.Table.from_batches(list(iter_xlsx_batches(path, **kwargs)))


def whole_sheet(path: Path) -> pa.Table:
    batch = fastexcel.read_excel(str(path)).load_sheet(0, schema_sample_rows=None, eager=True)
    return pa.Table.from_batches([batch])


def test_column_letters() -> None:
    letters = column_letters(16_384)
    assert letters[:3] == ["A", "B", "C"]
    assert letters[25:28] == ["Z", "AA", "AB"]
    assert letters[701:703] == ["ZZ", "AAA"]
    assert letters[-1] == "XFD"


def test_writer_round_trip_through_two_readers(tmp_path: Path) -> None:
    path = tmp_path / "out.xlsx"
    table = pa.table(
        {
            "text": ["plain", "a & b < c > d", "  spaced  ", "naïve ✓ 日本", None, "tab\there", "bell\x07gone"],
            "int": pa.array([1, -2, 3, None, 5, 6, 7], pa.int64()),
            "float": [0.1 + 0.2, 1e20, float("nan"), 2.5, None, -0.0, 1234567.75],
            "flag": [True, False, None, True, True, False, True],
            "day": [dt.date(2024, 2, 29), None, dt.date(1999, 12, 31), dt.date(2024, 1, 1), None, None, None],
        }
    )
    with XlsxTableWriter(path) as book:
        sheet = book.add_sheet("data", table.column_names)
        sheet.write(table.slice(0, 3))
        sheet.write(table.slice(3))
        sheet.close()
        other = book.add_sheet("second", ["only"])
        other.write(pa.table({"only": ["x"]}))

    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["data", "second"]
    rows = list(wb["data"].iter_rows(values_only=True))
    assert rows[0] == ("text", "int", "float", "flag", "day")
    assert rows[1] == ("plain", 1, 0.30000000000000004, True, dt.datetime(2024, 2, 29))
    assert rows[2][0] == "a & b < c > d" and rows[2][2] == 1e20 and rows[2][3] is False
    assert rows[3][0] == "  spaced  " and rows[3][2] is None  # NaN has no xlsx form: left empty
    assert rows[4][0] == "naïve ✓ 日本" and rows[4][1] is None
    assert rows[5][0] is None and rows[5][2] is None
    assert rows[6][0] == "tab\there"
    # Characters XML 1.0 cannot hold are written as OOXML's _xHHHH_ escape, which openpyxl does not
    # decode (Excel, LibreOffice and calamine do: checked below and in test_round_trip.py).
    assert rows[7][0] == "bell_x0007_gone"
    assert rows[7][2] == 1234567.75
    assert list(wb["second"].iter_rows(values_only=True)) == [("only",), ("x",)]

    back = whole_sheet(path)
    assert back.column("text").to_pylist()[:2] == ["plain", "a & b < c > d"]
    assert back.column("float").to_pylist()[6] == 1234567.75
    assert back.column("text").to_pylist()[6] == "bell\x07gone"


def test_shared_strings_cap_falls_back_to_inline_strings(tmp_path: Path) -> None:
    path = tmp_path / "many.xlsx"
    values = [f"id-{i}" for i in range(500)]
    with XlsxTableWriter(path, max_shared_strings=100) as book:
        sheet = book.add_sheet("s", ["id", "kind"])
        sheet.write(pa.table({"id": values, "kind": ["a", "b"] * 250}))
    with zipfile.ZipFile(path) as archive:
        sheet_xml = archive.read("xl/worksheets/sheet1.xml").decode()
    assert 't="inlineStr"' in sheet_xml and 't="s"' in sheet_xml
    rows = list(openpyxl.load_workbook(path).active.iter_rows(values_only=True))
    assert [r[0] for r in rows[1:]] == values
    assert [r[1] for r in rows[1:]] == ["a", "b"] * 250


def test_writer_refuses_more_rows_than_a_sheet_holds(tmp_path: Path) -> None:
    with pytest.raises(XlsxWriteError, match="1048576"):
        with XlsxTableWriter(tmp_path / "big.xlsx") as book:
            sheet = book.add_sheet("s", ["n"])
            sheet.rows_written = 1_048_570
            sheet.write(pa.table({"n": list(range(10))}))


def test_reader_reads_the_samples_like_fastexcel() -> None:
    for name in ("1_row.xlsx", "100_rows.xlsx"):
        assert read_all(SAMPLES / name).equals(whole_sheet(SAMPLES / name))


def _xlsxwriter_file(path: Path, rows: list[list], *, constant_memory: bool, second_sheet: bool = False) -> None:
    wb = xlsxwriter.Workbook(str(path), {"constant_memory": constant_memory})
    ws = wb.add_worksheet("first")
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if value is not None:
                ws.write(r, c, value)
    if second_sheet:
        wb.add_worksheet("second").write(0, 0, "ignored")
    wb.close()


@pytest.mark.parametrize("constant_memory", [True, False], ids=["inline-strings", "shared-strings"])
def test_reader_splits_into_parts_without_changing_anything(tmp_path: Path, constant_memory: bool) -> None:
    rng = np.random.default_rng(0)
    rows: list[list] = [["id", "name", "value", "mixed"]]
    for i in range(1, 2_000):
        mixed = "text" if i == 1_500 else float(i)  # one text cell: the column becomes text
        rows.append([i, f"name {i % 7}", float(rng.integers(0, 1000)), mixed])
    for blank in (400, 401, 999, 1_000, 1_001):  # blank rows, some at part boundaries
        rows[blank] = [None, None, None, None]
    path = tmp_path / "parts.xlsx"
    _xlsxwriter_file(path, rows, constant_memory=constant_memory, second_sheet=True)

    expected = whole_sheet(path)
    batches = list(iter_xlsx_batches(path, rows_per_part=100, block_bytes=4096))
    assert len(batches) > 5  # really split
    # Types are decided per part (the part with the text cell reads the column as MIXED cells, each
    # keeping its kind); values and positions must match the whole-sheet read.
    names = expected.column_names
    assert all(b.schema.names == names for b in batches)
    assert sum(b.num_rows for b in batches) == expected.num_rows
    for name in names:
        merged = [v for b in batches for v in b.column(name).to_pylist()]
        want = expected.column(name).to_pylist()
        assert [_norm(v) for v in merged] == [_norm(v) for v in want], name


def _norm(value: object) -> object:
    """Compare as text: fastexcel alone reads the mixed column as text, the parts as numbers or
    as MIXED cells (a dict per cell here)."""
    if isinstance(value, dict):
        value = value["number"] if value["kind"] == 1 else value["text"]
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return None if value is None else str(value)


def test_reader_header_only_and_leading_empty_rows(tmp_path: Path) -> None:
    path = tmp_path / "header.xlsx"
    _xlsxwriter_file(path, [["a", "b"]], constant_memory=False)
    batches = list(iter_xlsx_batches(path))
    assert len(batches) == 1 and batches[0].num_rows == 0 and batches[0].schema.names == ["a", "b"]

    path = tmp_path / "leading.xlsx"
    _xlsxwriter_file(path, [[None], [None], ["a", "b"], [1, 2], [3, 4]], constant_memory=False)
    table = read_all(path, rows_per_part=1, block_bytes=64)
    assert table.column_names == ["a", "b"]
    assert table.column("a").to_pylist() == [1.0, 3.0]


def test_reader_reports_damaged_files(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.xlsx"
    truncated.write_bytes((SAMPLES / "100_rows.xlsx").read_bytes()[:2000])
    with pytest.raises(XlsxFormatError, match="not a readable xlsx"):
        read_all(truncated)

    not_xlsx = tmp_path / "other.zip"
    with zipfile.ZipFile(not_xlsx, "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(XlsxFormatError, match="workbook.xml is missing"):
        read_all(not_xlsx)

    garbage = tmp_path / "garbage.xlsx"
    with zipfile.ZipFile(SAMPLES / "100_rows.xlsx") as src, zipfile.ZipFile(garbage, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.startswith("xl/worksheets/"):
                data = b"<worksheet><sheetData><row r='1'><c r='A1' t='s'><v>0</v></c></row><row"
            dst.writestr(item, data)
    with pytest.raises(XlsxFormatError):
        read_all(garbage)


@pytest.mark.parametrize(
    ("chunk", "prefix", "expected"),
    [
        (b'<row r="7"><c r="A7"><v>1</v></c></row><row r="9" spans="1:2"><c r="A9"/></row>', b"", 9),
        (b'<x:row r="3"><x:c r="A3"/></x:row><x:row\tr="4"></x:row>', b"x:", 4),
        (b'<row r="5"></row><row></row>', b"", None),  # the last row has no number: the caller keeps its own
        (b'<row r="5"></row><rowX r="6"/>', b"", 5),  # another element whose name starts with "row"
        (b"<c/>", b"", None),
    ],
)
def test_last_row_number_finds_the_last_rows_own_number(chunk: bytes, prefix: bytes, expected: int | None) -> None:
    from aimq_tabular.xlsx_reader import _last_row_number

    assert _last_row_number(chunk, prefix) == expected
