"""The row count a scoring run's progress is measured against, taken before the file is read."""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

import openpyxl
import pytest

from aimq_cli.score import _rows_text, _running_fraction
from aimq_pipelines.uploads.input_table import BadInput, InputTable
from aimq_tabular.csv_reader import LineCount
from tests.helpers.paths import SAMPLES


def estimate_data_rows(source: Path, fmt: str) -> int | None:
    return InputTable.open(source, fmt).rows_expected


def test_samples_declare_their_rows() -> None:
    assert estimate_data_rows(SAMPLES / "1_row.xlsx", "xlsx") == 1
    assert estimate_data_rows(SAMPLES / "100_rows.xlsx", "xlsx") == 100


def _workbook(path: Path, rows: int) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["model_group", "kilometers"])
    for i in range(rows):
        ws.append(["A", i])
    wb.save(path)
    return path


def test_xlsx_without_a_dimension_says_nothing(tmp_path: Path) -> None:
    source = _workbook(tmp_path / "with.xlsx", 7)
    assert estimate_data_rows(source, "xlsx") == 7
    stripped = tmp_path / "without.xlsx"
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(stripped, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = re.sub(rb"<dimension[^>]*/>", b"", data)
            zout.writestr(item, data)
    assert estimate_data_rows(stripped, "xlsx") is None


def test_damaged_xlsx_fails_before_any_estimate(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.xlsx"
    damaged.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(BadInput, match="not a readable xlsx file"):
        InputTable.open(damaged, "xlsx")


@pytest.mark.parametrize(
    ("content", "rows"),
    [
        (b"a,b\n1,2\n3,4\n", 2),
        (b"a,b\r\n1,2\r\n3,4", 2),  # no line break after the last row
        (b"a,b\n", 0),
        (b"", 0),
    ],
)
def test_csv_counts_lines(tmp_path: Path, content: bytes, rows: int) -> None:
    for size in (1, 3, 1 << 20):  # the count goes over the blocks of the checksum pass, however cut
        lines = LineCount()
        for start in range(0, len(content), size):
            lines.update(content[start : start + size])
        assert lines.data_rows == rows
    if content:  # a file without a header line fails as it did before (test_scoring)
        source = tmp_path / "rows.csv"
        source.write_bytes(content)
        assert estimate_data_rows(source, "csv") == rows


def test_one_pass_checks_the_checksum_counts_lines_and_sniffs_the_header(tmp_path: Path) -> None:
    content = b"a;b\n" + b"".join(b"%d;x\n" % i for i in range(100_000))  # well past one block
    source = tmp_path / "rows.csv"
    source.write_bytes(content)
    table = InputTable.open(source, "csv", sha256=hashlib.sha256(content).hexdigest())
    assert table.rows_expected == 100_000
    assert (table.csv_header.names, table.csv_header.delimiter) == (["a", "b"], ";")
    with pytest.raises(BadInput, match="does not match the checksum"):
        InputTable.open(source, "csv", sha256="0" * 64)


def test_cli_progress_uses_the_estimate_but_never_shows_over_100_percent() -> None:
    running = {"rows_done": 25, "rows_rejected": 0, "rows_expected": 100, "rows_total": None}
    assert _running_fraction(running) == 0.25 and _rows_text(running) == "25/100 rows"
    past = {**running, "rows_done": 120}  # the file declared fewer rows than it holds
    assert _running_fraction(past) is None and _rows_text(past) == "120 rows"
    unknown = {**running, "rows_expected": None}
    assert _running_fraction(unknown) is None and _rows_text(unknown) == "25 rows"
