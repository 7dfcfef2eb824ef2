"""Read a CSV upload in bounded memory, as Arrow record batches of text columns.

Every column is read as text: validation (``FeatureSpec.encode_frame``) turns the feature columns
into numbers and reports a bad cell as the user typed it, and other columns are written back
unchanged. The delimiter is the one of ``,`` ``;`` and tab that the header line uses most
(spreadsheet programs in many locales write ``;``).

The header is sniffed once, from the file's first ``HEAD_BYTES`` (``CsvHeader.of``), by whoever
reads those bytes first (a scoring run takes them from its checksum pass), and handed to
``iter_csv_batches``.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv

HEAD_BYTES = 1 << 16
_DELIMITERS = (",", ";", "\t")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"
_WRONG_FIELDS = re.compile(r"(?:Row #(\d+): )?Expected (\d+) columns, got (\d+): (.*)", re.DOTALL)


class CsvFormatError(ValueError):
    """The file is not a CSV file we can read; the message says why, for the user."""


def sniff_header(head: bytes) -> tuple[list[str], str]:
    """Column names (without surrounding spaces) and delimiter from the start of the file."""
    cells, delimiter = _header_cells(head)
    return [n.strip() for n in cells], delimiter


def _header_cells(head: bytes) -> tuple[list[str], str]:
    """The header line's cells as the file has them, and the delimiter."""
    line = _header_line(head)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CsvFormatError(f"the CSV file is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if not text.strip():
        raise CsvFormatError("the CSV file is empty (no header line)")
    delimiter = max(_DELIMITERS, key=text.count)
    if delimiter not in text:
        shown = text if len(text) <= 80 else text[:80] + "…"
        raise CsvFormatError(
            f"the header line has no column separator (a comma, semicolon or tab): {shown!r}; "
            "save the file as CSV with one of those"
        )
    return next(csv.reader(io.StringIO(text), delimiter=delimiter)), delimiter


def _header_line(head: bytes) -> bytes:
    if head.startswith(_BOM):
        head = head[len(_BOM) :]
    end = _LINE_END.search(head)
    return head if end is None else head[: end.start()]


@dataclass(frozen=True)
class CsvHeader:
    """What the start of a CSV file says about all of it."""

    names: list[str]  # the columns' names, made unique (``_unique``)
    delimiter: str
    header_only: bool  # the header line is all the file holds
    cells: list[str]  # the header's cells as the file has them (spaces kept, repeats repeated)

    @classmethod
    def of(cls, head: bytes) -> CsvHeader:
        """The header of the file whose first ``HEAD_BYTES`` (or all, if shorter) are ``head``."""
        cells, delimiter = _header_cells(head)
        after_header = head.removeprefix(_BOM)[len(_header_line(head)) :]
        header_only = len(head) < HEAD_BYTES and not after_header.strip(b"\r\n")
        return cls(_unique([n.strip() for n in cells]), delimiter, header_only, cells)


def iter_csv_batches(path: Path, header: CsvHeader, *, block_bytes: int = 8 << 20) -> Iterator[pa.RecordBatch]:
    """The rows of the file ``header`` was sniffed from, as batches of text columns; a file with
    only a header yields one empty batch."""
    empty = pa.RecordBatch.from_pylist([], schema=pa.schema([(n, pa.string()) for n in header.names]))
    if header.header_only:
        yield empty  # the header and nothing else (pyarrow refuses a header without a line break)
        return
    options = {
        "read_options": pcsv.ReadOptions(column_names=header.names, skip_rows=1, block_size=block_bytes),
        # Quoted values may hold line breaks (a spreadsheet's multi-line cell). Empty lines stay
        # rows (of nulls, skipped as blank later) so row numbers stay those of the file.
        "parse_options": pcsv.ParseOptions(
            delimiter=header.delimiter, newlines_in_values=True, ignore_empty_lines=False
        ),
        # No text is a missing value: pyarrow's null markers (N/A, NA, null, #N/A...) are cells the
        # user typed and come back as typed; an empty cell is an empty string (blank for validation).
        "convert_options": pcsv.ConvertOptions(
            column_types={n: pa.string() for n in header.names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    }
    rows = 0
    try:
        for batch in pcsv.open_csv(path, **options):
            rows += batch.num_rows
            yield batch
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise CsvFormatError(_explain(path, exc, rows, block_bytes, options)) from exc
    if rows == 0:
        yield empty


def _explain(path: Path, exc: Exception, rows_read: int, block_bytes: int, options: dict) -> str:
    """pyarrow's error as the user can act on it: with the row (or line) where it happened."""
    text = str(exc)
    if "straddling object" in text:
        return (
            f"row {rows_read + 2} is longer than {block_bytes:,} bytes, far longer than a spreadsheet row "
            "(a cell holds at most 32,767 characters), or a quote opened there is never closed"
        )
    if "invalid UTF8" in text:
        line = _first_invalid_utf8_line(path)
        where = f"line {line}" if line is not None else "a line"
        return (
            f"the CSV file is not UTF-8 text: {where} has a byte that is not UTF-8; "
            'save the file as UTF-8 ("CSV UTF-8" in Excel)'
        )
    if "Expected" in text and "columns" in text:
        # The threaded reader does not know row numbers; a single-threaded pass up to the bad row does.
        try:
            serial = {
                **options,
                "read_options": pcsv.ReadOptions(
                    column_names=options["read_options"].column_names,
                    skip_rows=1,
                    block_size=block_bytes,
                    use_threads=False,
                ),
            }
            for _ in pcsv.open_csv(path, **serial):
                pass
        except pa.ArrowInvalid as again:
            text = str(again)
        found = _WRONG_FIELDS.search(text)
        if found is None:
            return f"a row has the wrong number of fields: {text[:300]}"
        row, expected, got, content = found.groups()
        shown = content if len(content) <= 100 else content[:100] + "…"
        where = f"row {row}" if row else "a row"
        return f"{where} has {got} fields where the header has {expected}: {shown!r}"
    return f"the CSV file cannot be read: {text}"


def _first_invalid_utf8_line(path: Path) -> int | None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                return line + block.count(b"\n", 0, exc.start)
            line += block.count(b"\n")
    return None


def _unique(names: list[str]) -> list[str]:
    """Empty or repeated header cells get distinct names so no column is lost or merged."""
    used: set[str] = set()
    out = []
    for i, name in enumerate(names):
        base = name or f"column_{i + 1}"
        candidate, n = base, 1
        while candidate in used:
            candidate, n = f"{base}_{n}", n + 1
        used.add(candidate)
        out.append(candidate)
    return out


def write_options(delimiter: str) -> pcsv.WriteOptions:
    return pcsv.WriteOptions(delimiter=delimiter, quoting_style="needed")


class LineCount:
    """A file's lines, counted over its blocks as another pass reads them (a scoring run's checksum)."""

    def __init__(self) -> None:
        self.breaks = 0
        self.last = b"\n"

    def update(self, block: bytes) -> None:
        if block:
            self.breaks += block.count(b"\n")
            self.last = block[-1:]

    @property
    def data_rows(self) -> int:
        """Lines below the header: what progress is measured against. An estimate: a quoted value
        may hold a line break, and blank lines are counted."""
        lines = self.breaks + (self.last != b"\n")
        return max(lines - 1, 0)
