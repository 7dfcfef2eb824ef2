"""One part of a sheet as a record batch in which every cell keeps its value and its kind.

calamine (through fastexcel) decides one type per column. When a column's cells are of one kind
(all numbers, all text, all dates...) that type is exact, and ``dtype_coercion="strict"`` reads
the part in one pass, as fast as before. When a column mixes kinds (numbers and a few text cells
such as ``n/a``, dates and notes), fastexcel's default coercion would turn the text into missing
values or the numbers into text; strict reading refuses the part instead, and then the part is
read once per type and every cell's kind is worked out from which reads could take it:

======================  ========  ========  ==========  ==========
cell                    string    float     boolean     datetime
======================  ========  ========  ==========  ==========
number                  value     value     value       (serial)
text (even ``"15000"``) value     parsed?   null        null
boolean                 true      1 / 0     value       null
date, time, duration    value     null      null        value
======================  ========  ========  ==========  ==========

A column with more than one kind becomes a ``MIXED`` struct column: ``kind`` per cell and one
field per kind; the writer writes each cell by its kind, and validation reads ``text``.
"""

from __future__ import annotations

from pathlib import Path

import fastexcel
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

EMPTY, NUMBER, TEXT, BOOLEAN, DATETIME = 0, 1, 2, 3, 4
MIXED = pa.struct(
    [
        ("kind", pa.int8()),
        ("text", pa.string()),  # every cell as text: what validation and the rejected list show
        ("number", pa.float64()),
        ("boolean", pa.bool_()),
        ("datetime", pa.timestamp("ms")),
    ]
)


def is_mixed(kind: pa.DataType) -> bool:
    return kind == MIXED


def as_text(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A column as text, whatever kind its cells are (for the rejected list and validation)."""
    if is_mixed(column.type):
        return pc.struct_field(column, "text")
    return column if pa.types.is_string(column.type) else pc.cast(column, pa.string())


def load_part(path: Path, sheet: str) -> pa.RecordBatch:
    reader = fastexcel.read_excel(str(path))
    try:
        # All rows decide a column's type, and a column of mixed kinds is refused, not coerced.
        batch = reader.load_sheet(sheet, header_row=0, schema_sample_rows=None, dtype_coercion="strict", eager=True)
    except fastexcel.UnsupportedColumnTypeCombinationError:
        return _load_mixed(reader, sheet)
    if _markers_read_as_missing(reader, sheet, batch):
        return _load_mixed(reader, sheet)
    return batch


def _markers_read_as_missing(reader: fastexcel.ExcelReader, sheet: str, batch: pa.RecordBatch) -> bool:
    """Whether a typed column holds text that fastexcel took for a missing value or NaN.

    Even strict reading treats the text ``n/a``, ``N/A``, ``NA``, ``None``, ``null``, ``#N/A``
    in a number or date column as missing and ``nan`` as NaN. A column with missing values (or
    NaN) is read again as text, and any text there where the typed read has none is a cell that
    must come back as the user typed it. Columns without gaps cost nothing.
    """
    suspects = []
    for j, column in enumerate(batch.columns):
        if pa.types.is_string(column.type) or pa.types.is_null(column.type):
            continue
        gaps = column.null_count > 0
        if not gaps and pa.types.is_floating(column.type):
            gaps = bool(pc.any(pc.is_nan(column)).as_py())
        if gaps:
            suspects.append(j)
    if not suspects:
        return False
    text = reader.load_sheet(
        sheet, header_row=0, schema_sample_rows=None, dtypes="string", use_columns=suspects, eager=True
    )
    for j, shown in zip(suspects, text.columns):
        typed = batch.column(j)
        missing = pc.is_null(typed, nan_is_null=True)
        written = pc.and_(pc.is_valid(shown), pc.not_equal(shown, ""))
        if pc.any(pc.and_(missing, written)).as_py():
            return True
    return False


def _load(reader: fastexcel.ExcelReader, sheet: str, dtype: str) -> pa.RecordBatch:
    return reader.load_sheet(sheet, header_row=0, schema_sample_rows=None, dtypes=dtype, eager=True)


def _load_mixed(reader: fastexcel.ExcelReader, sheet: str) -> pa.RecordBatch:
    text = _load(reader, sheet, "string")
    number = _load(reader, sheet, "float")
    boolean = _load(reader, sheet, "boolean")
    stamp = _load(reader, sheet, "datetime")
    reads = {TEXT: text, NUMBER: number, BOOLEAN: boolean}
    columns: list[pa.Array | None] = []
    dated = []  # columns of date-formatted cells only: their guessed type tells dates from durations
    for j in range(text.num_columns):
        s, f, b, d = text.column(j), number.column(j), boolean.column(j), stamp.column(j)
        kinds = _kinds(s, f, b, d)
        present = np.unique(kinds[kinds != EMPTY])
        if len(present) == 0:
            columns.append(s)  # all empty
        elif len(present) == 1 and present[0] == DATETIME:
            columns.append(None)
            dated.append(j)
        elif len(present) == 1:
            columns.append(reads[int(present[0])].column(j))  # one kind: that read changed nothing
        else:
            is_bool = kinds == BOOLEAN
            shown = pc.if_else(pa.array(is_bool), pc.if_else(b, "TRUE", "FALSE"), s)  # as a spreadsheet shows it
            columns.append(
                pa.StructArray.from_arrays(
                    [pa.array(kinds, pa.int8()), shown, f, b, d.cast(pa.timestamp("ms"))],
                    fields=list(MIXED),
                    mask=pa.array(kinds == EMPTY),
                )
            )
    if dated:
        guessed = reader.load_sheet(sheet, header_row=0, schema_sample_rows=None, use_columns=dated, eager=True)
        for j, column in zip(dated, guessed.columns):
            columns[j] = column
    return pa.RecordBatch.from_arrays(columns, names=text.schema.names)


def _kinds(s: pa.Array, f: pa.Array, b: pa.Array, d: pa.Array) -> np.ndarray:
    def valid(array: pa.Array) -> np.ndarray:
        return pc.is_valid(array).to_numpy(zero_copy_only=False)

    has_s, has_f, has_b, has_d = valid(s), valid(f), valid(b), valid(d)
    lowered = pc.utf8_lower(s)
    bool_text = pc.fill_null(pc.is_in(lowered, pa.array(["true", "false"])), False).to_numpy(zero_copy_only=False)
    kinds = np.full(len(s), TEXT, dtype=np.int8)
    kinds[has_b & has_f] = NUMBER  # text never reads as a boolean, even "1" or "TRUE"
    kinds[has_b & has_f & bool_text] = BOOLEAN
    kinds[has_d & ~has_f] = DATETIME  # date-formatted cells do not read as plain numbers
    kinds[~has_s] = EMPTY
    return kinds
