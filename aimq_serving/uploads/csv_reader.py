"""Read a CSV upload in bounded memory, as Arrow record batches of text columns.

Every column is read as text: validation (``FeatureSpec.encode_frame``) turns the feature columns
into numbers and reports a bad cell as the user typed it, and other columns are written back
unchanged. The delimiter is the one of ``,`` ``;`` and tab that the header line uses most
(spreadsheet programs in many locales write ``;``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv

_HEAD_BYTES = 1 << 16
_DELIMITERS = (",", ";", "\t")


class CsvFormatError(ValueError):
    """The file is not a CSV file we can read; the message says why, for the user."""


def sniff_header(head: bytes) -> tuple[list[str], str]:
    """Column names and delimiter from the start of the file."""
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    line_end = head.find(b"\n")
    line = head if line_end < 0 else head[:line_end]
    try:
        text = line.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as exc:
        raise CsvFormatError(f"the CSV file is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if not text.strip():
        raise CsvFormatError("the CSV file is empty (no header line)")
    delimiter = max(_DELIMITERS, key=text.count)
    names = next(csv.reader(io.StringIO(text), delimiter=delimiter))
    return [n.strip() for n in names], delimiter


def iter_csv_batches(path: Path, *, block_bytes: int = 8 << 20) -> Iterator[pa.RecordBatch]:
    with open(path, "rb") as fh:
        head = fh.read(_HEAD_BYTES)
    names, delimiter = sniff_header(head)
    unique = _unique(names)
    try:
        reader = pcsv.open_csv(
            path,
            read_options=pcsv.ReadOptions(column_names=unique, skip_rows=1, block_size=block_bytes),
            # Quoted values may hold line breaks (a spreadsheet's multi-line cell).
            parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(
                column_types={n: pa.string() for n in unique}, strings_can_be_null=True, quoted_strings_can_be_null=False
            ),
        )
        for batch in reader:
            yield batch
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise CsvFormatError(f"the CSV file cannot be read: {exc}") from exc


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


def counted_data_rows(path: Path) -> int:
    """Lines below the header: what progress is measured against. An estimate: a quoted value may
    hold a line break, and blank lines are counted."""
    lines = 0
    last = b"\n"
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    if last != b"\n":
        lines += 1
    return max(lines - 1, 0)
