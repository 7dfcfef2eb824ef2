"""Writing a scored file in the upload's format, and the rejected rows beside it.

xlsx: sheet ``predictions`` (the upload's columns, then ``predicted_price`` and ``model_version``),
then sheet ``rejected`` (``row``, ``errors``, the upload's columns). CSV: the same columns with the
upload's delimiter. Both formats also get ``rejected.csv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.csv as pcsv

from aimq_serving.uploads import csv_reader
from aimq_serving.uploads.storage import Format
from aimq_serving.uploads.xlsx_writer import XlsxTableWriter

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


def open_result(fmt: Format, path: Path, kept: list[str], delimiter: str) -> ResultWriter:
    """A writer of the upload's ``kept`` columns plus the two prediction columns."""
    return XlsxResult(path, kept) if fmt == "xlsx" else CsvResult(path, kept, delimiter)


class XlsxResult:
    def __init__(self, path: Path, kept: list[str]):
        self.kept = kept
        self.book = XlsxTableWriter(path)
        self.sheet = self.book.add_sheet("predictions", [*kept, PRICE, VERSION])
        self.done = False

    def write(self, batch: pa.RecordBatch) -> None:
        self.sheet.write(batch)

    def finish(self, rejected: list[pa.Table]) -> None:
        self.sheet.close()
        sheet = self.book.add_sheet("rejected", [ROW, ERRORS, *self.kept])
        for table in rejected:
            sheet.write(table)
        sheet.close()
        self.book.close()
        self.done = True

    def abort(self) -> None:
        if not self.done:
            self.book.abort()


class CsvResult:
    def __init__(self, path: Path, kept: list[str], delimiter: str):
        # A CSV upload is read as text: its columns go back as text, exactly as they came.
        self.schema = pa.schema([*(pa.field(n, pa.string()) for n in kept), (PRICE, pa.float64()), (VERSION, pa.int64())])
        self.writer = pcsv.CSVWriter(str(path), self.schema, write_options=csv_reader.write_options(delimiter))
        self.done = False

    def write(self, batch: pa.RecordBatch) -> None:
        self.writer.write_batch(batch.cast(self.schema))

    def finish(self, rejected: list[pa.Table]) -> None:
        self.writer.close()
        self.done = True

    def abort(self) -> None:
        if not self.done:
            self.writer.close()


def write_rejected_csv(path: Path, tables: list[pa.Table], kept: list[str]) -> None:
    schema = pa.schema([(ROW, pa.int64()), (ERRORS, pa.string()), *((n, pa.string()) for n in kept)])
    with pcsv.CSVWriter(str(path), schema, write_options=csv_reader.write_options(",")) as out:
        for table in tables:
            # xlsx parts infer their own types: text is the one type every column can take.
            out.write_table(pa.table([table.column(i).cast(f.type) for i, f in enumerate(schema)], schema=schema))
