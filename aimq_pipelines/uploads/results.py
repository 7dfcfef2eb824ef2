"""Writing a scored file in the upload's format, and the rejected rows beside it.

xlsx: sheet ``predictions`` (the upload's columns, then ``OUTPUT_COLUMNS``: ``predicted_price``,
``price_low``, ``price_high``, ``out_of_range``, ``model_version``, ``model_id``), sheet ``drift`` (one row per
model group and feature: ``aimq_pipelines/monitoring/sheet.py``), sheet ``rejected`` (``row``,
``errors``, the upload's columns), and sheet ``about`` (the provenance: ``provenance.py``). CSV:
the same columns with the upload's delimiter; its provenance is ``about.json`` beside it. Both
formats also get ``rejected.csv``.

CSV results neutralise the cells a spreadsheet program would evaluate as a formula (OWASP's
CSV-injection advice) and no others: such a cell is written with a leading ``'``, so Excel or
LibreOffice opening the file shows the text instead of running it. A harmless cell comes back as it
was: a user's ``-`` for "none" must not become ``'-``. Formulas are (after leading blanks, which
Excel skips): ``=`` or ``@`` followed by anything (``=1+1``, ``@cmd``); one or more signs directly
followed by an operand (``+SUM(A1)``, ``-2+3``, ``-A1``, ``--1``), unless the whole cell is a
number (``-5``, ``+3.5``, ``-1e3``, ``-1,000``, ``-10%``, ``-$1``); signs, blanks and then text
holding a call, a DDE pipe or an operator (``- =1+1``, ``- 1+1``). Left alone: ``-``, ``--``,
``+``, ``1-2``, ``- note``, a tab before ``foo``. LibreOffice 7.4 itself evaluates only the ``=`` cells of a
CSV (``tests/pipelines/uploads/test_results.py`` opens results in it); the sign and ``@``
rules are for Excel, which evaluates those too. The xlsx result needs none of this: its cells are
stored as text, never as formulas, and come back unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from aimq_tabular import csv_reader, xlsx_cells
from aimq_tabular.formats import Format
from aimq_tabular.xlsx_writer import XlsxTableWriter

# Text a spreadsheet program would evaluate as a formula (RE2 syntax; see the module docstring),
# unless the whole cell is a number as spreadsheets read numbers.
_FORMULA = (
    r"(?s)^[ \t\r\n]*(?:"
    r"[=@]."  # =1+1, @cmd
    r"|[+\-]+[\pL\pN_.(\"'$@=&{\[]"  # a sign and at once an operand: +SUM(A1), -2+3, -A1
    r"|[+\-]+[ \t]+.*[(|=+\-*/^&@!]"  # a sign, blanks, then a call, pipe or operator: - 1+1
    r")"
)
_NUMBER = r"^[+-]?\$?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][+-]?\d+)?%?$"

PRICE = "predicted_price"
PRICE_LOW = "price_low"  # the conformal range at the run's coverage (AIMQ_COVERAGE)
PRICE_HIGH = "price_high"
# The row's numeric fields outside its model's training range, joined by ", "; empty when none.
OUT_OF_RANGE = "out_of_range"
VERSION = "model_version"
MODEL_ID = "model_id"  # the model's short id: the start of its ONNX file's SHA-256
# The columns a result adds to the upload's; a result uploaded again gets them replaced.
OUTPUT_COLUMNS = (PRICE, PRICE_LOW, PRICE_HIGH, OUT_OF_RANGE, VERSION, MODEL_ID)
ABOUT_SHEET = "about"
DRIFT_SHEET = "drift"
ROW = "row"
ERRORS = "errors"


class ResultWriter(Protocol):
    def write(self, batch: pa.RecordBatch) -> None: ...

    def finish(self, rejected: list[pa.Table], about: list[tuple[str, str]], drift: pa.Table | None = None) -> None:
        """Complete the file, adding the rejected rows, the provenance (field, value) and the drift
        table where the format keeps them."""

    def abort(self) -> None:
        """Release the file after a failure (the caller removes it)."""


def open_result(fmt: Format, path: Path, headers: list[str], delimiter: str) -> ResultWriter:
    """A writer of the upload's kept columns (``headers``: as uploaded, in order, maybe repeated)
    plus the ``OUTPUT_COLUMNS``; batches hold those columns in that order."""
    return XlsxResult(path, headers) if fmt == "xlsx" else CsvResult(path, headers, delimiter)


class XlsxResult:
    def __init__(self, path: Path, headers: list[str]):
        self.headers = headers
        self.book = XlsxTableWriter(path)
        self.sheet = self.book.add_sheet("predictions", [*headers, *OUTPUT_COLUMNS])
        self.done = False

    def write(self, batch: pa.RecordBatch) -> None:
        self.sheet.write(batch)

    def finish(self, rejected: list[pa.Table], about: list[tuple[str, str]], drift: pa.Table | None = None) -> None:
        self.sheet.close()
        if drift is not None:
            sheet = self.book.add_sheet(DRIFT_SHEET, drift.schema.names)
            sheet.write(drift)
            sheet.close()
        sheet = self.book.add_sheet("rejected", [ROW, ERRORS, *self.headers])
        for table in rejected:
            sheet.write(table)
        sheet.close()
        sheet = self.book.add_sheet(ABOUT_SHEET, ["field", "value"])
        sheet.write(pa.table({"field": [f for f, _ in about], "value": [v for _, v in about]}))
        sheet.close()
        self.book.close()
        self.done = True

    def abort(self) -> None:
        if not self.done:
            self.book.abort()


class CsvResult:
    def __init__(self, path: Path, headers: list[str], delimiter: str):
        # A CSV upload is read as text: its columns go back as text, exactly as they came.
        self.schema = pa.schema(
            [
                *(pa.field(n, pa.string()) for n in headers),
                (PRICE, pa.float64()),
                (PRICE_LOW, pa.float64()),
                (PRICE_HIGH, pa.float64()),
                (OUT_OF_RANGE, pa.string()),
                (VERSION, pa.int64()),
                (MODEL_ID, pa.string()),
            ]
        )
        self.writer = pcsv.CSVWriter(str(path), self.schema, write_options=csv_reader.write_options(delimiter))
        self.done = False

    def write(self, batch: pa.RecordBatch) -> None:
        batch = batch.rename_columns(self.schema.names).cast(self.schema)
        self.writer.write_batch(_empty_unquoted(neutralise_formulas(batch)))

    def finish(self, rejected: list[pa.Table], about: list[tuple[str, str]], drift: pa.Table | None = None) -> None:
        # Rejected rows, provenance and the drift verdict go beside it: rejected.csv, about.json.
        self.writer.close()
        self.done = True

    def abort(self) -> None:
        if not self.done:
            self.writer.close()


def neutralise_formulas(batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
    """Text columns with a ``'`` before each cell a spreadsheet would evaluate (module docstring)."""
    columns = list(batch.columns)
    for j, column in enumerate(columns):
        if not pa.types.is_string(column.type):
            continue
        risky = pc.and_not(pc.match_substring_regex(column, _FORMULA), pc.match_substring_regex(column, _NUMBER))
        if pc.any(risky).as_py():
            columns[j] = pc.if_else(risky, pc.binary_join_element_wise("'", column, ""), column)
    return type(batch).from_arrays(columns, schema=batch.schema)


def _empty_unquoted(batch: pa.RecordBatch) -> pa.RecordBatch:
    """An empty cell is read as empty text; written as missing it comes back as the upload had it
    (``a,,b``), not as a quoted empty string (``a,"",b``)."""
    columns = [
        pc.if_else(pc.equal(c, ""), pa.scalar(None, c.type), c) if pa.types.is_string(c.type) else c
        for c in batch.columns
    ]
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def write_rejected_csv(path: Path, tables: list[pa.Table], kept: list[str], headers: list[str]) -> None:
    """The rejected rows: their ``kept`` columns under their ``headers`` as uploaded."""
    schema = pa.schema([(ROW, pa.int64()), (ERRORS, pa.string()), *((n, pa.string()) for n in headers)])
    with pcsv.CSVWriter(str(path), schema, write_options=csv_reader.write_options(",")) as out:
        for table in tables:
            # xlsx parts infer their own types: text is the one type every column can take.
            columns = [table.column(ROW), table.column(ERRORS), *(xlsx_cells.as_text(table.column(n)) for n in kept)]
            out.write_table(neutralise_formulas(pa.table(columns, schema=schema)))
