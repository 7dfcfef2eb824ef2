#!/usr/bin/env python3
"""Writes the repository's sample workbooks (samples/*.xlsx) from the project's own generator.

    .venv/bin/python scripts/make-samples.py [DIR]

xlsxwriter writes them, not AIMQ's own writer, so tests read files the code under test did not make.
The creation date is fixed, so the same code writes the same bytes. tests/pipelines/models/test_samples.py
checks that the committed files hold what this writes.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import xlsxwriter

from aimq_pipelines.models.synthetic import sample_listings

SAMPLE_ROWS = {"1_row.xlsx": 1, "100_rows.xlsx": 100}
FIXED_DATE = dt.datetime(2026, 1, 1)


def write_sample(path: Path, rows: int) -> None:
    frame = sample_listings(rows)
    book = xlsxwriter.Workbook(str(path))
    book.set_properties({"created": FIXED_DATE})
    sheet = book.add_worksheet("Sheet1")
    sheet.write_row(0, 0, list(frame.columns))
    for i, record in enumerate(frame.itertuples(index=False), start=1):
        sheet.write_row(i, 0, [v.item() if hasattr(v, "item") else v for v in record])
    book.close()


def main(argv: list[str]) -> None:
    target = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1] / "samples"
    target.mkdir(parents=True, exist_ok=True)
    for name, rows in SAMPLE_ROWS.items():
        write_sample(target / name, rows)
        print(f"wrote {target / name} ({rows} rows)")


if __name__ == "__main__":
    main(sys.argv)
