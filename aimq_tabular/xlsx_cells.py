"""One part of a sheet as a record batch in which every cell keeps its value and its kind.

calamine (through fastexcel) decides one type per column. When a column's cells are of one kind
(all numbers, all text, all dates...) that type is exact, and ``dtype_coercion="strict"`` reads
the part in one pass, as fast as before. When a column mixes kinds (numbers and a few text cells
such as ``n/a``, dates and notes), fastexcel's default coercion would turn the text into missing
values or the numbers into text; strict reading refuses the column instead, and then that column
is read once per type and every cell's kind is worked out from which reads could take it:

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

What that costs: calamine parses the whole part for every read, whatever columns are asked for.
Strict reading names the first column it refuses; the part is read again with that column as text
(once per refused column), which reads every other column exactly. The columns to work out (the
refused ones, and typed columns with gaps, which may hide markers) are copied into a small workbook
of their own (xlsx_columns), so their reads per type cost a fraction of a read of the part. A
sheet's parts tend to mix kinds in the same columns: ``PartLoader`` reads the columns an earlier
part refused as text at once, so a later part costs one read of the part and the reads of the copy.
Measured on 300,000 rows with a mixed column in every part: 1.6x the time of one read per part
(the reader before issue 15), where reading each such part once per kind took 5.1x
(benchmarks/results/fidelity.md).
Columns are chosen by their place in the sheet (fastexcel's ``absolute_index``), so a table need not
start in column A.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import fastexcel
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aimq_tabular.xlsx_columns import PartSheet

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

# fastexcel 0.21 names the refused column last in its message ("... could not determine dtype for
# column <name>"); a message that does not parse is handled by reading every column per type.
_REFUSED_COLUMN = re.compile(r"could not determine dtype for column (.*?)\n?\Z", re.DOTALL)


def is_mixed(kind: pa.DataType) -> bool:
    return kind == MIXED


def as_text(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A column as text, whatever kind its cells are (for the rejected list and validation)."""
    if is_mixed(column.type):
        return pc.struct_field(column, "text")
    return column if pa.types.is_string(column.type) else pc.cast(column, pa.string())


class PartLoader:
    """Reads the parts of one sheet (xlsx_reader), in order, one at a time."""

    def __init__(self, sheet: str, member: str):
        self._sheet = sheet  # the sheet's name, which fastexcel opens
        self._member = member  # its XML in the part (``xl/worksheets/sheet1.xml``)
        self._as_text: list[str] = []  # columns strict reading refused in this or an earlier part

    @property
    def sheet(self) -> str:
        return self._sheet

    def load(self, path: Path) -> pa.RecordBatch:
        reader = fastexcel.read_excel(str(path))
        earlier = len(self._as_text)
        read = self._read_strictly(reader)
        if read is None:
            return _every_column_by_kind(reader, self._sheet, PartSheet(path, self._member))
        refused = len(self._as_text) > earlier  # strict reading refused a column of this part
        batch, positions = read.batch, read.positions
        as_text = [j for j, name in enumerate(batch.schema.names) if name in self._as_text]
        suspects = [j for j in range(batch.num_columns) if j not in as_text and _has_gaps(batch.column(j))]
        if not as_text and not suspects:
            return batch
        part = PartSheet(path, self._member)
        reads = _copy_reads(part, self._sheet, read, sorted(as_text + suspects), suspects)
        if reads is None:  # the copy cannot be made or checked: the part itself, read per type
            reads = _ColumnReads(reader, self._sheet, batch.num_rows, part)

        # Typed columns with gaps, and the same cells as text: the suspects, read as text again...
        typed = {j: batch.column(j) for j in suspects}
        shown = dict(zip(suspects, reads.read([positions[j] for j in suspects], "string"))) if suspects else {}
        strict: dict[int, pa.Array] = {}
        if as_text and not refused:
            # ...and the columns an earlier part refused, read as strict reading reads them here.
            try:
                strict = dict(zip(as_text, reads.read([positions[j] for j in as_text], None, "strict")))
            except fastexcel.UnsupportedColumnTypeCombinationError:
                refused = True
            else:
                typed.update((j, strict[j]) for j in as_text if _has_gaps(strict[j]))
                shown.update((j, batch.column(j)) for j in as_text)
        if not refused and not any(_markers_read_as_missing(typed[j], shown[j]) for j in typed):
            return _replaced(batch, strict)

        # A part with a column of mixed kinds (or markers) is worked out cell by cell in every column,
        # as it always was: a column of one kind comes out as strict reading reads it, except that a
        # typed column's cells of empty text come back as text cells (in other parts, as missing
        # values: fastexcel's reading). Only the columns where the two can differ are read per type.
        text = {j: batch.column(j) for j in as_text}
        text.update((j, shown[j]) for j in suspects if _text_where_missing(typed[j], shown[j]))
        return _by_kind(batch, positions, text, reads)

    def _read_strictly(self, reader: fastexcel.ExcelReader) -> _PartRead | None:
        """The part read strictly, the columns refused so far as text (each refusal costs one read of
        the part); None when fastexcel's message does not say which column it refused."""
        while True:
            try:
                # All rows decide a column's type, and a column of mixed kinds is refused, not coerced.
                sheet = reader.load_sheet(
                    self._sheet,
                    header_row=0,
                    schema_sample_rows=None,
                    dtype_coercion="strict",
                    dtypes=dict.fromkeys(self._as_text, "string") or None,
                    eager=False,
                )
            except fastexcel.UnsupportedColumnTypeCombinationError as exc:
                refused = _REFUSED_COLUMN.search(str(exc))
                if refused is None or refused.group(1) in self._as_text:
                    return None
                self._as_text.append(refused.group(1))
                continue
            # Only what the batch needs is kept: the sheet object holds all of the part's cells.
            columns = sheet.selected_columns
            return _PartRead(sheet.to_arrow(), [c.absolute_index for c in columns], [c.dtype for c in columns])


@dataclass(frozen=True)
class _PartRead:
    batch: pa.RecordBatch
    positions: list[int]  # each column's place in the sheet (0 = A)
    dtypes: list[str]  # the type fastexcel read each column as


def _replaced(batch: pa.RecordBatch, columns: dict[int, pa.Array]) -> pa.RecordBatch:
    """``batch`` with some columns replaced, each nullable only if it has nulls (as fastexcel's)."""
    if not columns:
        return batch
    arrays, fields = list(batch.columns), list(batch.schema)
    for j, column in columns.items():
        arrays[j] = column
        fields[j] = pa.field(fields[j].name, column.type, nullable=column.null_count > 0)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _has_gaps(column: pa.Array) -> bool:
    """Whether a typed column has missing values or NaN, which may be text fastexcel took for them."""
    if pa.types.is_string(column.type) or pa.types.is_null(column.type):
        return False
    if column.null_count > 0:
        return True
    return pa.types.is_floating(column.type) and bool(pc.any(pc.is_nan(column)).as_py())


def _text_where_missing(typed: pa.Array, shown: pa.Array) -> bool:
    """Whether a typed column has text cells (markers, or empty text) where it has no value."""
    return bool(pc.any(pc.and_(pc.is_null(typed, nan_is_null=True), pc.is_valid(shown))).as_py())


def _markers_read_as_missing(typed: pa.Array, shown: pa.Array) -> bool:
    """Whether a typed column holds text that fastexcel took for a missing value or NaN.

    Even strict reading treats the text ``n/a``, ``N/A``, ``NA``, ``None``, ``null``, ``#N/A``
    in a number or date column as missing and ``nan`` as NaN. A column with missing values (or
    NaN) is read again as text (``shown``), and any text there where the typed read has none is a
    cell that must come back as the user typed it. Columns without gaps cost nothing.
    """
    missing = pc.is_null(typed, nan_is_null=True)
    written = pc.and_(pc.is_valid(shown), pc.not_equal(shown, ""))
    return bool(pc.any(pc.and_(missing, written)).as_py())


class _ColumnReads:
    """Reads of some of a part's columns, chosen by sheet column (0 = A), as long as the part's read."""

    def __init__(self, reader: fastexcel.ExcelReader, sheet: str, rows: int, part: PartSheet):
        self._reader = reader
        self._sheet = sheet
        self._rows = rows
        self._part = part  # the part's XML, for a copy of its date cells (read_dates)

    def load(
        self, positions: Sequence[int], dtypes: str | dict[int, str] | None, coercion: str = "coerce"
    ) -> pa.RecordBatch:
        """``dtypes`` None: fastexcel guesses each column's type from its cells."""
        return self._reader.load_sheet(
            self._sheet,
            header_row=0,
            schema_sample_rows=None,
            use_columns=list(positions),
            dtypes=dtypes,
            dtype_coercion=coercion,
            eager=True,
        )

    def read(
        self, positions: Sequence[int], dtypes: str | dict[int, str] | None, coercion: str = "coerce"
    ) -> list[pa.Array]:
        # A copy ends at its last row with a cell; the part's rows below it are empty in its columns.
        return [_padded(column, self._rows) for column in self.load(positions, dtypes, coercion).columns]

    def read_dates(self, positions: Sequence[int]) -> list[pa.Array]:
        """The columns read as dates. calamine panics (pyo3's PanicException, a BaseException)
        turning a number beyond any date (-2.3e12, 1e242) into one, in a part with date cells: then
        the columns are read from a copy without such numbers. Only the date read is taken from
        it, and a number cell's kind comes from the number read, so no cell changes."""
        try:
            return self.read(positions, "datetime")
        except BaseException as exc:
            if type(exc).__name__ != "PanicException" or not self._part.every_cell_has_a_reference():
                raise
        copy = fastexcel.read_excel(self._part.workbook_of(positions, dates_only=True))
        return _ColumnReads(copy, self._sheet, self._rows, self._part).read(positions, "datetime")


def _padded(column: pa.Array, rows: int) -> pa.Array:
    if len(column) >= rows:
        return column
    if len(column) == 0 and pa.types.is_null(column.type):
        # fastexcel types a column without values as text, but as null in a sheet without rows: a
        # copy with no rows below its header stands for rows of empty cells.
        column = pa.array([], pa.string())
    return pa.concat_arrays([column, pa.nulls(rows - len(column), column.type)])


def _copy_reads(
    part: PartSheet, sheet: str, read: _PartRead, wanted: list[int], suspects: list[int]
) -> _ColumnReads | None:
    """Reads of the ``wanted`` columns from a copy of them, if the copy reads as the part does.

    Checked: the copy's read of each column, in the type the part's read gave it, is that column
    of the part's read. For a column read as text that covers every cell with a value; a typed
    column's gaps may hide text, so ``suspects`` (typed columns with gaps) need every cell of the
    sheet to carry its reference, without which a cell could be missed.
    """
    if suspects and not part.every_cell_has_a_reference():
        return None
    batch, positions = read.batch, read.positions
    chosen = [positions[j] for j in wanted]
    reads = _ColumnReads(fastexcel.read_excel(part.workbook_of(chosen)), sheet, batch.num_rows, part)
    check = reads.load(chosen, {positions[j]: read.dtypes[j] for j in wanted})
    if check.num_rows > batch.num_rows or check.schema.names != [batch.schema.names[j] for j in wanted]:
        return None
    for j, column in zip(wanted, check.columns):
        if not _same(_padded(column, batch.num_rows), batch.column(j)):
            return None
    return reads


def _same(a: pa.Array, b: pa.Array) -> bool:
    if a.type != b.type:
        return False
    if pa.types.is_floating(a.type):  # NaN (the text "nan") is not equal to itself
        nan_a, nan_b = pc.is_nan(a), pc.is_nan(b)
        if not nan_a.equals(nan_b):
            return False
        a, b = pc.if_else(nan_a, pa.scalar(None, a.type), a), pc.if_else(nan_b, pa.scalar(None, b.type), b)
    return a.equals(b)


def _every_column_by_kind(reader: fastexcel.ExcelReader, sheet: str, part: PartSheet) -> pa.RecordBatch:
    loaded = reader.load_sheet(sheet, header_row=0, schema_sample_rows=None, dtypes="string", eager=False)
    text = loaded.to_arrow()
    positions = [column.absolute_index for column in loaded.selected_columns]
    every = {j: text.column(j) for j in range(text.num_columns)}
    return _by_kind(text, positions, every, _ColumnReads(reader, sheet, text.num_rows, part))


def _by_kind(
    batch: pa.RecordBatch, positions: list[int], text: dict[int, pa.Array], reads: _ColumnReads
) -> pa.RecordBatch:
    """``batch`` with the columns ``text`` holds (each read as text) worked out cell by cell."""
    columns = sorted(text)
    chosen = [positions[j] for j in columns]
    number, boolean = (reads.read(chosen, dtype) for dtype in ("float", "boolean"))
    stamp = reads.read_dates(chosen)
    out = list(batch.columns)
    dated = []  # columns of date-formatted cells only: their guessed type tells dates from durations
    for j, f, b, d in zip(columns, number, boolean, stamp):
        s = text[j]
        kinds = _kinds(s, f, b, d)
        present = np.unique(kinds[kinds != EMPTY])
        if len(present) == 0:
            out[j] = s  # all empty
        elif len(present) == 1 and present[0] == DATETIME:
            dated.append(j)
        elif len(present) == 1:
            out[j] = {TEXT: s, NUMBER: f, BOOLEAN: b}[int(present[0])]  # one kind: that read changed nothing
        else:
            is_bool = kinds == BOOLEAN
            shown = pc.if_else(pa.array(is_bool), pc.if_else(b, "TRUE", "FALSE"), s)  # as a spreadsheet shows it
            out[j] = pa.StructArray.from_arrays(
                [pa.array(kinds, pa.int8()), shown, f, b, d.cast(pa.timestamp("ms"))],
                fields=list(MIXED),
                mask=pa.array(kinds == EMPTY),
            )
    if dated:
        for j, column in zip(dated, reads.read([positions[j] for j in dated], None)):
            out[j] = column
    return pa.RecordBatch.from_arrays(out, names=batch.schema.names)


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
