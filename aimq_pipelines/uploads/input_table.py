"""An upload's table as a scoring run reads it: its bytes checked, where its data is, and its rows.

``InputTable.open`` finds the table once per run; the row estimate, the reader and the writer all
use what it found. It reads the file's bytes in one sequential pass when the run has a checksum to
check (the one taken at upload) or the file is a CSV: that pass also counts a CSV's lines for the
progress estimate and keeps its first bytes, where the header (names, delimiter) is sniffed. This
pass before the parse is earned: the file must match its checksum before anything is read from it,
and progress needs its estimate before the first row. It parses nothing (a hash and a count of line
breaks per block) and leaves the file in the page cache for the parse. An xlsx's data sheet and
header row are located (``xlsx_reader.locate_data``) and its declared row count read from the
sheet's first bytes. ``InputTable.batches`` then parses the file, once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aimq_pipelines.uploads.results import OUTPUT_COLUMNS
from aimq_serving import schema
from aimq_tabular import csv_reader, xlsx_reader
from aimq_tabular.formats import Format
from aimq_tabular.xlsx_columns import column_letters

_BLOCK_BYTES = 1 << 20


class BadInput(ValueError):
    """The file cannot be scored at all (unreadable, wrong columns, too many rows); for the user."""


@dataclass(frozen=True)
class InputTable:
    """Where an upload's data is, and what it says of its size before it is read."""

    path: Path
    fmt: Format
    location: xlsx_reader.DataLocation | None  # xlsx: the data's sheet and header row
    csv_header: csv_reader.CsvHeader | None  # CSV: its column names and delimiter
    # How many data rows the file looks like it has: what a run's progress is measured against.
    # None when the file does not say (an xlsx without a sheet dimension).
    rows_expected: int | None

    @classmethod
    def open(cls, path: Path, fmt: Format, *, sha256: str | None = None, work_dir: Path | None = None) -> InputTable:
        """The table of the upload at ``path``; raise BadInput if its bytes differ from ``sha256``
        (when given) or no table can be read from them."""
        checksum = _Checksum(sha256)
        try:
            if fmt == "csv":
                lines = csv_reader.LineCount()
                head = _read_through(path, lines, checksum)
                checksum.check()
                return cls(path, fmt, None, csv_reader.CsvHeader.of(head), lines.data_rows)
            if sha256 is not None:
                _read_through(path, checksum)
                checksum.check()
            location = xlsx_reader.locate_data(path, schema.INPUT_COLUMNS, work_dir=work_dir)
        except (csv_reader.CsvFormatError, xlsx_reader.XlsxFormatError) as exc:
            raise BadInput(str(exc)) from exc
        rows = xlsx_reader.declared_data_rows(path, location.sheet, location.header_row)
        return cls(path, fmt, location, None, rows)

    @property
    def columns_expected(self) -> int:
        """The header's columns with a name (what the batches hold, give or take unnamed ones)."""
        if self.csv_header is not None:
            return len(self.csv_header.names)
        return len(self.location.header) if self.location is not None else 0

    @property
    def data_sheet(self) -> str | None:
        return self.location.sheet if self.location is not None else None

    @property
    def header_row(self) -> int:
        """The header's row as the sheet numbers it (CSV: its line, the first)."""
        return self.location.header_row if self.location is not None else 1

    @property
    def delimiter(self) -> str:
        """The CSV's delimiter, which its result keeps."""
        return self.csv_header.delimiter if self.csv_header is not None else ","

    def batches(
        self,
        chunk_rows: int,
        work_dir: Path | None,
        merged: list[str] | None = None,
        parsers: int = 1,
        stages: xlsx_reader.StageLog | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """The rows below the header, parsed in batches of about ``chunk_rows``; an xlsx's merged
        ranges go to ``merged`` once the last batch was read, its parts are parsed by ``parsers``
        processes and timed into ``stages`` (``xlsx_reader.iter_xlsx_batches``)."""
        if self.csv_header is not None:
            # ~80 bytes per row in a typical listings CSV: blocks of about chunk_rows rows.
            block_bytes = max(1 << 20, chunk_rows * 80)
            return csv_reader.iter_csv_batches(self.path, self.csv_header, block_bytes=block_bytes)
        return xlsx_reader.iter_xlsx_batches(
            self.path,
            location=self.location,
            rows_per_part=chunk_rows,
            # A part ends at a block's end: blocks of ~1/8 of a part (at ~100+ bytes of XML per row),
            # so parts come close to chunk_rows rows also when they are small.
            block_bytes=min(8 << 20, max(64 << 10, chunk_rows * 16)),
            work_dir=work_dir,
            merged=merged,
            parsers=parsers,
            stages=stages,
        )

    def header_cells(self, names: list[str]) -> list[HeaderCell]:
        """The header cell of each of the batches' columns (``names``: the reader's, made unique)."""
        if self.csv_header is not None:
            return [HeaderCell(text, _letters(j)) for j, text in enumerate(self.csv_header.cells)]
        found = self.location.header if self.location is not None else ()
        # fastexcel names a column after its header cell, or __UNNAMED__<n> when that is empty: the
        # named columns are the header's cells with a value, in order.
        if sum(not _UNNAMED.fullmatch(n) for n in names) != len(found):
            return [HeaderCell(n, None) for n in names]
        cells = iter(found)
        out = []
        for name in names:
            if _UNNAMED.fullmatch(name):
                out.append(HeaderCell("", None))
            else:
                position, text = next(cells)
                out.append(HeaderCell(text, _letters(position)))
        return out


_UNNAMED = re.compile(r"__UNNAMED__\d+")


def _letters(position: int) -> str:
    return column_letters(position).decode()


@dataclass(frozen=True)
class HeaderCell:
    """A column's header as the upload has it, and where: what the result writes back and what
    messages name."""

    text: str
    column: str | None  # the sheet's column letters (a CSV's field as a spreadsheet shows it)


class _Reader(Protocol):
    def update(self, block: bytes, /) -> None: ...


def _read_through(path: Path, *readers: _Reader) -> bytes:
    """One sequential pass over the file, each block handed to every reader; the first
    ``csv_reader.HEAD_BYTES`` back."""
    head = bytearray()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK_BYTES):
            if len(head) < csv_reader.HEAD_BYTES:
                head += block[: csv_reader.HEAD_BYTES - len(head)]
            for reader in readers:
                reader.update(block)
    return bytes(head)


class _Checksum:
    """The bytes' SHA-256 against the one taken at upload; nothing to check without one."""

    def __init__(self, expected: str | None) -> None:
        self.expected = expected
        self.digest = hashlib.sha256()

    def update(self, block: bytes) -> None:
        if self.expected is not None:
            self.digest.update(block)

    def check(self) -> None:
        if self.expected is not None and self.digest.hexdigest() != self.expected:
            raise BadInput("the stored file does not match the checksum taken at upload; upload it again")


def row_numbers(batch: pa.RecordBatch, first: int, *, lines: bool) -> tuple[np.ndarray, int]:
    """The sheet row (xlsx) or first line (CSV) of each row of ``batch``, and the next one's.

    xlsx batches hold every sheet row below the header, blank ones too. A CSV row spans one line
    plus one per line break inside its quoted cells (a spreadsheet's multi-line cell)."""
    spans = np.ones(batch.num_rows, dtype=np.int64)
    for column in batch.columns if lines else ():
        if pa.types.is_string(column.type) and pc.any(pc.match_substring_regex(column, "[\r\n]")).as_py():
            breaks = pc.count_substring_regex(column, "\r\n|\r|\n")
            spans += pc.fill_null(breaks, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    ends = first + np.cumsum(spans)
    return ends - spans, int(ends[-1]) if len(ends) else first


@dataclass(frozen=True)
class Columns:
    """Where the schema's columns are in the upload, and the columns written back."""

    source: dict[str, str]  # schema name -> the upload's column name
    kept: list[str]  # the upload's columns, in order, without earlier prediction columns
    headers: list[str]  # the kept columns' headers exactly as uploaded
    letters: dict[str, str | None]  # schema name -> its sheet column, where known

    @classmethod
    def resolve(
        cls, names: list[str], location: xlsx_reader.DataLocation | None = None, cells: list[HeaderCell] | None = None
    ) -> Columns:
        """``names`` are the reader's (unique) column names, ``cells`` their headers as uploaded.
        A schema column's header is matched trimmed and in any case; one that appears twice is
        ambiguous, and the upload is refused rather than one of them picked."""
        cells = cells if cells is not None else [HeaderCell(n, None) for n in names]
        by_key: dict[str, list[int]] = {}
        for j, cell in enumerate(cells):
            by_key.setdefault(cell.text.strip().lower(), []).append(j)
        missing = [c for c in schema.INPUT_COLUMNS if c not in by_key]
        if missing:
            shown = ", ".join(repr(c.text if len(c.text) <= 60 else c.text[:60] + "…") for c in cells[:30]) or "none"
            where = ""
            if location is not None:
                # Only visible sheets are named: a hidden one is not what the user sees or means.
                sheets = ", ".join(repr(n) for n in location.visible_sheets)
                where = (
                    f" (no row among the first {xlsx_reader.HEADER_SEARCH_ROWS} with a value of any visible sheet "
                    f"holds them; visible sheets: {sheets}; shown: sheet {location.sheet!r} row {location.header_row})"
                )
            raise BadInput(
                f"missing column(s): {', '.join(missing)}. Required: {', '.join(schema.INPUT_COLUMNS)}; "
                f"the file has: {shown}{where}"
            )
        twice = [c for c in schema.INPUT_COLUMNS if len(by_key[c]) > 1]
        if twice:
            raise BadInput("; ".join(_ambiguous(c, [cells[j] for j in by_key[c]]) for c in twice))
        # A result file uploaded again: its prediction columns are replaced, not duplicated.
        keep = [j for j, cell in enumerate(cells) if cell.text.strip().lower() not in OUTPUT_COLUMNS]
        return cls(
            source={c: names[by_key[c][0]] for c in schema.INPUT_COLUMNS},
            kept=[names[j] for j in keep],
            headers=[cells[j].text for j in keep],
            letters={c: cells[by_key[c][0]].column for c in schema.INPUT_COLUMNS},
        )


def _ambiguous(name: str, cells: list[HeaderCell]) -> str:
    where = [c.column or repr(c.text) for c in cells]
    listed = ", ".join(where[:-1]) + " and " + where[-1]
    return f"{name} is in columns {listed}; keep one"
