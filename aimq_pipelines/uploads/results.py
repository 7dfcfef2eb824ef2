"""Writing a scored file in the upload's format, and the rejected rows beside it.

xlsx: sheet ``predictions`` (the upload's columns, then ``predicted_price`` and ``model_version``),
then sheet ``rejected`` (``row``, ``errors``, the upload's columns). CSV: the same columns with the
upload's delimiter. Both formats also get ``rejected.csv``.

CSV results neutralise formula-looking text (OWASP's CSV-injection advice): a cell that starts
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return, and is not a number, is written with
a leading ``'``, so a spreadsheet program opening the file shows the text instead of running it.
Numbers such as ``-5`` or ``+3.2`` are left alone. The xlsx result needs none of this: its cells
are stored as text, never as formulas, and come back unchanged.
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

# Text a spreadsheet program would take for a formula (OWASP), unless it is a plain number.
_FORMULA_START = r"^[=+\-@\t\r]"
_NUMBER = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"

PRICE = "predicted_price"
VERSION = "model_version"
ROW = "row"
ERRORS = "errors"


class ResultWriter(Protocol):
    def write(self, batch: pa.RecordBatch) -> None: ...

    def finish(self, rejected: list[pa.Table]) -> None:
        """Complete the file, adding the rejected rows where the format keeps them."""

    def abort(self) -> None:
        """Release the file after a failure (the caller removes it)."""


def open_result(fmt: Format, path: Path, headers: list[str], delimiter: str) -> ResultWriter:
    """A writer of the upload's kept columns (``headers``: as uploaded, in order, maybe repeated)
    plus the two prediction columns; batches hold those columns in that order."""
    return XlsxResult(path, headers) if fmt == "xlsx" else CsvResult(path, headers, delimiter)


class XlsxResult:
    def __init__(self, path: Path, headers: list[str]):
        self.headers = headers
        self.book = XlsxTableWriter(path)
        self.sheet = self.book.add_sheet("predictions", [*headers, PRICE, VERSION])
        self.done = False

    def write(self, batch: pa.RecordBatch) -> None:
        self.sheet.write(batch)

    def finish(self, rejected: list[pa.Table]) -> None:
        self.sheet.close()
        sheet = self.book.add_sheet("rejected", [ROW, ERRORS, *self.headers])
        for table in rejected:
            sheet.write(table)
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
            [*(pa.field(n, pa.string()) for n in headers), (PRICE, pa.float64()), (VERSION, pa.int64())]
        )
        self.writer = pcsv.CSVWriter(str(path), self.schema, write_options=csv_reader.write_options(delimiter))
        self.done = False

    def write(self, batch: pa.RecordBatch) -> None:
        batch = batch.rename_columns(self.schema.names).cast(self.schema)
        self.writer.write_batch(_empty_unquoted(neutralise_formulas(batch)))

    def finish(self, rejected: list[pa.Table]) -> None:
        self.writer.close()
        self.done = True

    def abort(self) -> None:
        if not self.done:
            self.writer.close()


def neutralise_formulas(batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
    """Text columns with a ``'`` before each formula-looking cell (see the module docstring)."""
    columns = list(batch.columns)
    for j, column in enumerate(columns):
        if not pa.types.is_string(column.type):
            continue
        risky = pc.and_not(pc.match_substring_regex(column, _FORMULA_START), pc.match_substring_regex(column, _NUMBER))
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
