"""The row count a scoring run's progress is measured against, taken before the file is read."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import openpyxl
import pytest

from aimq_cli.score import _rows_text, _running_fraction
from aimq_pipelines.uploads.scoring import estimate_data_rows
from tests.helpers.paths import SAMPLES


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


def test_damaged_xlsx_says_nothing(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.xlsx"
    damaged.write_bytes(b"PK\x03\x04 not really a zip")
    assert estimate_data_rows(damaged, "xlsx") is None


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
    source = tmp_path / "rows.csv"
    source.write_bytes(content)
    assert estimate_data_rows(source, "csv") == rows


def test_cli_progress_uses_the_estimate_but_never_shows_over_100_percent() -> None:
    running = {"rows_done": 25, "rows_rejected": 0, "rows_expected": 100, "rows_total": None}
    assert _running_fraction(running) == 0.25 and _rows_text(running) == "25/100 rows"
    past = {**running, "rows_done": 120}  # the file declared fewer rows than it holds
    assert _running_fraction(past) is None and _rows_text(past) == "120 rows"
    unknown = {**running, "rows_expected": None}
    assert _running_fraction(unknown) is None and _rows_text(unknown) == "25 rows"
