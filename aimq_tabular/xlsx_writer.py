"""A streaming xlsx writer for plain tables: values only, one sheet after another.

Why not xlsxwriter: measured here, xlsxwriter (constant_memory) writes 8,000-15,000 rows/s, so a
full 1,048,575-row sheet takes one to two minutes. This writer builds a whole chunk of rows' XML
with Arrow compute kernels (no Python object per cell) and streams it into the zip, several times
faster (see docs/batch.md for the measurements).

It writes the part of SpreadsheetML (ECMA-376) a table of values needs: cells with explicit
references, shared strings for repeated text (category columns; a cap keeps memory bounded and
sends further new text inline), numbers, booleans, dates, times and durations, a frozen header row.

Faithful to what was read (docs/batch.md, "Round trip"):

- dates and times are serial numbers of Excel's 1900 date system, which counts the 29 February
  1900 that never was: serials from 1900-03-01 on are one higher than the days since 1899-12-30,
  earlier ones are not. Each cell gets a fitting format: a date (no time of day), a date-time, a
  time of day (serial below 1, which is how a sheet stores a time), a duration (``[h]:mm:ss``).
  Dates before 1899-12-31 have no serial and are written as ISO text.
- text is escaped as OOXML requires: ``_xHHHH_`` itself as ``_x005F_xHHHH_``, characters XML 1.0
  cannot hold (control characters) as ``_xHHHH_``, and a carriage return as ``&#13;`` (a literal
  one would become a line feed in any XML parser). Excel, LibreOffice and calamine decode these;
  openpyxl does not decode ``_xHHHH_``.
- a column of ``xlsx_cells.MIXED`` cells is written cell by cell in each cell's own kind.
Written with Arrow kernels rather than a library's per-cell escaping, for the speed above.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO
from xml.sax.saxutils import quoteattr

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aimq_tabular import deflate, xlsx_cells

MAX_ROWS = 1_048_576
MAX_COLUMNS = 16_384
MAX_CELL_CHARS = 32_767
# Arrow string offsets are 32-bit; chunks of this many rows stay far below 2 GiB of XML.
_CHUNK_ROWS = 65_536
# XML 1.0 forbids these characters even escaped (``&#7;``): OOXML writes them as ``_xHHHH_``.
_INVALID_XML = [*map(chr, [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)]), "\ufffe", "\uffff"]
_INVALID_XML_PATTERN = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in _INVALID_XML) + "]"
_EXCEL_EPOCH_DAYS = 25_569  # 1970-01-01 as an Excel serial date (1900 date system)
_DAY_US = 86_400_000_000
_UNIX_DAY_1899_12_31 = -25_568  # serial 0 ("1900-01-00"): a time of day has this date
_UNIX_DAY_1900_03_01 = -25_508  # the first day after Excel's 29 February 1900

_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_R_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_XML_DECL = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_STYLE_DATE = "1"
_STYLE_DATETIME = "2"
_STYLE_TIME = "3"
_STYLE_DURATION = "4"
_STYLES = (
    _XML_DECL + f'<styleSheet xmlns="{_NS}">'
    '<numFmts count="2"><numFmt numFmtId="164" formatCode="yyyy-mm-dd hh:mm:ss"/>'
    '<numFmt numFmtId="165" formatCode="[h]:mm:ss"/></numFmts>'
    '<fonts count="1"><font><sz val="11"/><name val="Calibri"/><family val="2"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="5"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="14" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    '<xf numFmtId="21" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    '<xf numFmtId="165" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs>'
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
)


class XlsxWriteError(ValueError):
    pass


def column_letters(count: int) -> list[str]:
    letters = []
    for index in range(count):
        name = ""
        n = index + 1
        while n:
            n, rem = divmod(n - 1, 26)
            name = chr(65 + rem) + name
        letters.append(name)
    return letters


class XlsxTableWriter:
    """Write sheets of tables into ``path``; sheets are written one after another, never interleaved.

    >>> with XlsxTableWriter(path) as book:
    ...     sheet = book.add_sheet("predictions", ["a", "b"])
    ...     sheet.write(batch)
    ...     sheet.close()
    """

    def __init__(self, path: Path, *, max_shared_strings: int = 200_000):
        # Level 1: the XML is repetitive, level 1 already shrinks it ~10x and runs ~4x faster than 6. The
        # sheets and shared strings are deflated by ISA-L (``deflate``), five times faster than zlib's 1.
        self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1)
        self._sheets: list[str] = []
        self._strings: dict[str, int] = {}
        self._max_strings = max_shared_strings
        self._open: SheetStream | None = None
        self._closed = False

    def add_sheet(self, name: str, columns: Sequence[str]) -> SheetStream:
        if self._open is not None and not self._open.closed:
            raise XlsxWriteError("close the current sheet before adding another")
        if len(columns) > MAX_COLUMNS:
            raise XlsxWriteError(f"{len(columns)} columns; an xlsx sheet holds at most {MAX_COLUMNS}")
        if not 0 < len(name) <= 31 or any(ch in name for ch in "[]:*?/\\"):
            raise XlsxWriteError(f"invalid sheet name {name!r}")
        self._sheets.append(name)
        part = f"xl/worksheets/sheet{len(self._sheets)}.xml"
        stream = deflate.deflating(self._zip.open(part, "w", force_zip64=True))
        self._open = SheetStream(self, stream, list(columns))
        return self._open

    def shared_ids(self, values: list[str | None]) -> np.ndarray | None:
        """Shared-string ids of ``values`` (-1 for None), or None if they would overflow the cap."""
        new = {v for v in values if v is not None and v not in self._strings}
        if len(self._strings) + len(new) > self._max_strings:
            return None
        for value in values:
            if value is not None and value not in self._strings:
                self._strings[value] = len(self._strings)
        return np.array([-1 if v is None else self._strings[v] for v in values], dtype=np.int64)

    def close(self) -> None:
        if self._closed:
            return
        if self._open is not None and not self._open.closed:
            self._open.close()
        if not self._sheets:
            raise XlsxWriteError("a workbook needs at least one sheet")
        zf = self._zip
        n = len(self._sheets)
        zf.writestr("[Content_Types].xml", _content_types(n))
        zf.writestr("_rels/.rels", _root_rels())
        zf.writestr("xl/workbook.xml", _workbook(self._sheets))
        zf.writestr("xl/_rels/workbook.xml.rels", _workbook_rels(n))
        zf.writestr("xl/styles.xml", _STYLES)
        with deflate.deflating(zf.open("xl/sharedStrings.xml", "w", force_zip64=True)) as out:
            out.write(f'{_XML_DECL}<sst xmlns="{_NS}" uniqueCount="{len(self._strings)}">'.encode())
            strings = list(self._strings)
            # Escaped 10,000 at a time, as one array: a dozen compute calls per batch, not per string
            # (a one-row file's result has ~100 strings; escaping each alone was a tenth of its step).
            for start in range(0, len(strings), 10_000):
                escaped = _escape_array(pa.array(strings[start : start + 10_000], pa.string()))
                out.write("".join(f'<si><t xml:space="preserve">{t}</t></si>' for t in escaped.to_pylist()).encode())
            out.write(b"</sst>")
        zf.close()
        self._closed = True

    def abort(self) -> None:
        """Close the file handle without completing the workbook (the caller deletes the file)."""
        self._closed = True
        try:
            if self._open is not None and not self._open.closed:
                self._open.stream.close()
        finally:
            self._zip.close()

    def __enter__(self) -> XlsxTableWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class SheetStream:
    def __init__(self, book: XlsxTableWriter, stream: IO[bytes], columns: list[str]):
        self.book = book
        self.stream = stream
        self.columns = columns
        self.letters = column_letters(len(columns))
        self.rows_written = 0  # including the header row
        self.closed = False
        stream.write(
            (
                f'{_XML_DECL}<worksheet xmlns="{_NS}" xmlns:r="{_R_NS}"><sheetViews>'
                '<sheetView workbookViewId="0">'
                '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
                "</sheetView></sheetViews><sheetData>"
            ).encode()
        )
        self.write(pa.table({str(i): pa.array([c], pa.string()) for i, c in enumerate(columns)}))

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        if table.num_columns != len(self.columns):
            raise XlsxWriteError(f"got {table.num_columns} columns, the sheet has {len(self.columns)}")
        if self.rows_written + table.num_rows > MAX_ROWS:
            raise XlsxWriteError(f"more than {MAX_ROWS} rows do not fit in an xlsx sheet")
        for start in range(0, table.num_rows, _CHUNK_ROWS):
            self._write_chunk(table.slice(start, _CHUNK_ROWS))

    def _write_chunk(self, chunk: pa.Table | pa.RecordBatch) -> None:
        n = chunk.num_rows
        if n == 0:
            return
        first = self.rows_written + 1
        refs = pc.cast(pa.array(np.arange(first, first + n, dtype=np.int64)), pa.string())
        parts: list[pa.Array | str] = ['<row r="', refs, '">']
        for letter, column in zip(self.letters, chunk.columns):
            parts.append(self._cells(_flat(column), letter, refs))
        parts.append("</row>")
        xml = pc.binary_join_element_wise(*parts, "")
        self.stream.write(_data_bytes(xml))
        self.rows_written += n

    def _cells(self, values: pa.Array, letter: str, refs: pa.Array) -> pa.Array:
        kind = values.type
        if pa.types.is_dictionary(kind):
            values = values.cast(kind.value_type)
            kind = values.type
        if xlsx_cells.is_mixed(kind):
            # One XML string per kind, empty where a cell is of another kind: joined, each cell
            # is written once, in its own kind.
            kinds = pc.struct_field(values, "kind")
            parts = []
            for code, name in (
                (xlsx_cells.NUMBER, "number"),
                (xlsx_cells.TEXT, "text"),
                (xlsx_cells.BOOLEAN, "boolean"),
                (xlsx_cells.DATETIME, "datetime"),
            ):
                child = pc.struct_field(values, name)
                parts.append(
                    self._cells(pc.if_else(pc.equal(kinds, code), child, pa.scalar(None, child.type)), letter, refs)
                )
            return pc.binary_join_element_wise(*parts, "")
        if pa.types.is_null(kind):
            return pa.nulls(len(values), pa.string()).fill_null("")
        if pa.types.is_boolean(kind):
            text = pc.if_else(values, "1", "0")
            return _join(f'<c r="{letter}', refs, '" t="b"><v>', text, "</v></c>")
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
            values = values.cast(pa.float64()) if pa.types.is_decimal(kind) else values
            if pa.types.is_floating(kind):
                # NaN and infinities have no xlsx number form: they are left empty.
                values = pc.if_else(pc.is_finite(values), values, pa.scalar(None, values.type))
            return _join(f'<c r="{letter}', refs, '"><v>', pc.cast(values, pa.string()), "</v></c>")
        if (
            pa.types.is_date(kind)
            or pa.types.is_timestamp(kind)
            or pa.types.is_time(kind)
            or pa.types.is_duration(kind)
        ):
            serial, style, text = _excel_serial(values)
            number = _join(f'<c r="{letter}', refs, '" s="', style, '"><v>', pc.cast(serial, pa.string()), "</v></c>")
            if text is None:
                return number
            return pc.binary_join_element_wise(number, self._cells(text, letter, refs), "")
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            values = pc.cast(values, pa.string())  # binary: shown as text
        values = pc.if_else(pc.equal(values, ""), pa.scalar(None, values.type), values)
        encoded = pc.dictionary_encode(values)
        ids = self.book.shared_ids(encoded.dictionary.to_pylist())
        if ids is not None:
            shared = pc.take(pa.array(ids), encoded.indices)
            return _join(f'<c r="{letter}', refs, '" t="s"><v>', pc.cast(shared, pa.string()), "</v></c>")
        text = _escape_array(values)
        return _join(f'<c r="{letter}', refs, '" t="inlineStr"><is><t xml:space="preserve">', text, "</t></is></c>")

    def close(self) -> None:
        if not self.closed:
            self.stream.write(b"</sheetData></worksheet>")
            self.stream.close()
            self.closed = True


def _flat(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


def _join(*parts: pa.Array | str) -> pa.Array:
    """Concatenate element-wise; a null value makes an empty string (the cell is left out)."""
    return pc.fill_null(pc.binary_join_element_wise(*parts, "", null_handling="emit_null"), "")


def _data_bytes(array: pa.Array) -> memoryview:
    """The concatenated values of a string array without copying them (it has no nulls)."""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)
    start, end = int(offsets[array.offset]), int(offsets[array.offset + len(array)])
    return memoryview(array.buffers()[2])[start:end]


def _escape_array(values: pa.Array) -> pa.Array:
    values = pc.utf8_slice_codeunits(values, 0, MAX_CELL_CHARS)
    values = pc.replace_substring_regex(values, "_(x[0-9A-Fa-f]{4}_)", "_x005F_\\1")
    if pc.any(pc.match_substring_regex(values, _INVALID_XML_PATTERN)).as_py():
        for char in _INVALID_XML:
            values = pc.replace_substring(values, char, f"_x{ord(char):04X}_")
    values = pc.replace_substring(values, "&", "&amp;")
    values = pc.replace_substring(values, "<", "&lt;")
    values = pc.replace_substring(values, ">", "&gt;")
    return pc.replace_substring(values, "\r", "&#13;")


def _excel_serial(values: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array | None]:
    """Serial numbers (1900 date system), the style of each cell, and ISO text for the dates
    before 1899-12-31 that have no serial (None when there are none)."""
    kind = values.type
    valid = pc.is_valid(values).to_numpy(zero_copy_only=False)
    if pa.types.is_duration(kind):
        micros = _micros(pc.cast(values.cast(pa.duration("us")), pa.int64()))
        return pa.array(micros / _DAY_US, mask=~valid), _styles(_STYLE_DURATION, valid), None
    if pa.types.is_time(kind):
        micros = _micros(pc.cast(values.cast(pa.time64("us")), pa.int64()))
        return pa.array(micros / _DAY_US, mask=~valid), _styles(_STYLE_TIME, valid), None
    if pa.types.is_date(kind):
        values = values.cast(pa.timestamp("us"))
    micros = _micros(pc.cast(values.cast(pa.timestamp("us", tz=values.type.tz)), pa.int64()))
    days, rest = np.divmod(micros, _DAY_US)
    leap = np.where(days >= _UNIX_DAY_1900_03_01, _EXCEL_EPOCH_DAYS, _EXCEL_EPOCH_DAYS - 1)
    serial = (days + leap) + rest / _DAY_US
    before = valid & (days < _UNIX_DAY_1899_12_31)
    style = np.where(days == _UNIX_DAY_1899_12_31, _STYLE_TIME, np.where(rest == 0, _STYLE_DATE, _STYLE_DATETIME))
    styles = pa.array(style, mask=~valid | before)
    text = None
    if before.any():
        shown = pc.cast(values.cast(pa.timestamp("us")), pa.string())
        text = pc.if_else(pa.array(before), shown, pa.scalar(None, pa.string()))
    return pa.array(serial, mask=~valid | before), styles, text


def _micros(values: pa.Array) -> np.ndarray:
    return pc.fill_null(values, 0).to_numpy(zero_copy_only=False).astype(np.int64)


def _styles(style: str, valid: np.ndarray) -> pa.Array:
    return pa.array(np.full(len(valid), style), mask=~valid)


def _content_types(sheets: int) -> str:
    overrides = "".join(
        f'<Override PartName="/xl/worksheets/sheet{i}.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        for i in range(1, sheets + 1)
    )
    return (
        _XML_DECL + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        f"{overrides}"
        '<Override PartName="/xl/styles.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
        '<Override PartName="/xl/sharedStrings.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
        "</Types>"
    )


def _root_rels() -> str:
    return (
        _XML_DECL + '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
        'officeDocument" Target="xl/workbook.xml"/></Relationships>'
    )


def _workbook(sheets: list[str]) -> str:
    entries = "".join(
        f'<sheet name={quoteattr(name)} sheetId="{i}" r:id="rId{i}"/>' for i, name in enumerate(sheets, start=1)
    )
    # The sheets' frozen-pane views refer to workbook view 0.
    return (
        _XML_DECL + f'<workbook xmlns="{_NS}" xmlns:r="{_R_NS}"><bookViews><workbookView/></bookViews>'
        f"<sheets>{entries}</sheets></workbook>"
    )


def _workbook_rels(sheets: int) -> str:
    base = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    rels = [
        f'<Relationship Id="rId{i}" Type="{base}/worksheet" Target="worksheets/sheet{i}.xml"/>'
        for i in range(1, sheets + 1)
    ]
    rels.append(f'<Relationship Id="rId{sheets + 1}" Type="{base}/styles" Target="styles.xml"/>')
    rels.append(f'<Relationship Id="rId{sheets + 2}" Type="{base}/sharedStrings" Target="sharedStrings.xml"/>')
    return (
        _XML_DECL
        + '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        + "".join(rels)
        + "</Relationships>"
    )
