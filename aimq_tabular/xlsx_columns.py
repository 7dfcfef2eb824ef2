"""Some columns of a part (see xlsx_reader), copied into a small workbook of their own.

calamine parses the whole sheet whichever columns are asked for (fastexcel's ``use_columns`` only
saves the conversion), so reading a few columns of a 100k-row part again costs as much as reading
it all. When some columns must be read once per kind of cell (xlsx_cells), their cells are copied,
as they are, into a workbook that holds the part's header row and those cells only: the same
shared strings, styles and workbook settings, so calamine reads each copied cell exactly as in the
part, and each read costs a fraction of a read of the part.

A cell is found by its reference (``<c r="B7"``): every writer we know of (Excel, LibreOffice,
openpyxl, xlsxwriter, this project's writer) puts it first. A sheet may leave references out, and
calamine then places a cell after its neighbour; ``every_cell_has_a_reference`` tells whether all
cells carry one, for callers that cannot check the copy by other means.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

_SHEET_DATA_OPEN = re.compile(rb"<(?:(\w+):)?sheetData\b[^>]*?(/?)>")


def column_letters(position: int) -> bytes:
    """The letters of the sheet column at ``position`` (0 = A), as in a cell reference."""
    letters = b""
    position += 1
    while position:
        position, rest = divmod(position - 1, 26)
        letters = bytes([65 + rest]) + letters
    return letters


class PartSheet:
    """A part's files, with its data sheet's XML split at the header row."""

    def __init__(self, path: Path, member: str):
        with zipfile.ZipFile(path) as archive:
            # Stored, not deflated (xlsx_reader writes parts so): reading them back is a copy.
            self._members = {info.filename: archive.read(info) for info in archive.infolist()}
        self._member = member
        xml = self._members[member]
        opened = _SHEET_DATA_OPEN.search(xml)
        if opened is None or opened.group(2):
            raise ValueError(f"{member} has no sheet data")
        self._prefix = opened.group(1) + b":" if opened.group(1) else b""
        row_end = b"</" + self._prefix + b"row>"
        header_end = xml.find(row_end, opened.end())
        # The rows below the header, as [start, end) of the XML; the header row is copied whole.
        self._start = opened.end() if header_end < 0 else header_end + len(row_end)
        self._end = max(xml.rfind(b"</" + self._prefix + b"sheetData>"), self._start)
        self._xml = xml

    def every_cell_has_a_reference(self) -> bool:
        """Whether every cell below the header starts ``<c r="`` followed by its column letters."""
        unreferenced = re.compile(b"<" + self._prefix + rb'c(?=[\s/>])(?! r="[A-Z])')
        return unreferenced.search(self._xml, self._start, self._end) is None

    def workbook_of(self, positions: Sequence[int], *, dates_only: bool = False) -> bytes:
        """The part as a workbook whose sheet holds the header row and, in one row element, the cells
        of the columns at ``positions`` (0 = A) in the part's order: calamine places a cell by its
        reference, and only a cell without one by the row element around it.

        ``dates_only``: number cells beyond Excel's dates (below 0 or past 9999-12-31) are left
        empty, for a read as dates that calamine cannot make of them (xlsx_cells.read_dates)."""
        letters = b"|".join(column_letters(position) for position in sorted(positions))
        c = self._prefix + b"c"
        # A cell ends at its first </c>: no element inside a cell is named c, and "<" in text is
        # always escaped. DOTALL: text may hold line breaks.
        cell = re.compile(b"<" + c + b' r="(?:' + letters + rb')\d+"[^>]*?(?:/>|>.*?</' + c + b">)", re.DOTALL)
        cells = cell.findall(self._xml, self._start, self._end)
        if dates_only:
            cells = [_without_value(c) if _beyond_dates(c) else c for c in cells]
        row = self._prefix + b"row"
        sheet = b"".join(
            [self._xml[: self._start], b"<" + row + b">", *cells, b"</" + row + b">", self._xml[self._end :]]
        )
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, data in self._members.items():
                archive.writestr(name, sheet if name == self._member else data)
        return out.getvalue()


# A number cell: no type, or type n, and its value (``<c r="B7" s="2"><v>-1.2E+16</v></c>``).
_NUMBER_CELL = re.compile(rb'<(?:\w+:)?c\b(?![^>]*\st="(?!n")[^"]*")[^>]*>\s*<(?:\w+:)?v>([^<]*)</', re.DOTALL)
_VALUE = re.compile(rb"<((?:\w+:)?)v>[^<]*</(?:\w+:)?v>")
_LAST_DATE = 2_958_466  # 10000-01-01 as an Excel serial: the first day past the last date


def _beyond_dates(cell: bytes) -> bool:
    number = _NUMBER_CELL.match(cell)
    if number is None:
        return False
    try:
        value = float(number.group(1))
    except ValueError:
        return False
    return not 0 <= value < _LAST_DATE


def _without_value(cell: bytes) -> bytes:
    return _VALUE.sub(b"", cell, count=1)
