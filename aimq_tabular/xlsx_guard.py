"""Checks that keep a hostile xlsx file from costing more than a real one: zip bombs, XML entity
bombs, encrypted or exotic zip entries.

The archive checks read only the zip's central directory (no inflating), so the API runs them on
every upload and the reader runs them again before reading. The DTD check runs on XML the reader
reads anyway. Numbers for scale: a real worksheet deflates 10-16x (measured on xlsxwriter files and
on this service's own results); deflate cannot do better than ~1,030x, which is what a zip bomb uses.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable

# A member may inflate to this many times its compressed size once it is big enough to matter.
MAX_RATIO = 100
RATIO_MIN_BYTES = 16 << 20
# Parts other than the worksheet (shared strings, styles, workbook) are read whole into memory.
MAX_METADATA_BYTES = 256 << 20
MAX_ENTRIES = 10_000
# The worksheet is streamed; these bound what one streaming step may hold.
MAX_PROLOG_BYTES = 16 << 20  # the sheet's XML before <sheetData>
MAX_ROW_BYTES = 32 << 20  # the XML of one row

_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
# A DTD (and so any entity definition) is forbidden in Office Open XML packages (ECMA-376 Part 2);
# refusing it outright is simpler and safer than trusting a parser's expansion limits.
_DTD = re.compile(rb"<!DOCTYPE|<!ENTITY", re.IGNORECASE)


class EncryptedWorkbook(ValueError):
    """The workbook cannot be read without a password."""


class UnsafeWorkbook(ValueError):
    """The workbook would cost far more to read than any real workbook of its size."""


_WORKSHEET = re.compile(r"^xl/worksheets/[^/]+\.xml$")


def check_in_memory(archive: zipfile.ZipFile, names: Iterable[str]) -> None:
    """Refuse if the parts the reader keeps in memory would inflate past MAX_METADATA_BYTES."""
    total = sum(archive.getinfo(n).file_size for n in names)
    if total > MAX_METADATA_BYTES:
        raise UnsafeWorkbook(
            f"the workbook's shared strings, styles and other parts inflate to {_size(total)}, "
            f"more than the {_size(MAX_METADATA_BYTES)} this service reads into memory"
        )


def check_archive(archive: zipfile.ZipFile) -> None:
    """Refuse by the central directory alone: encrypted or exotic entries, too many, bombs."""
    entries = archive.infolist()
    if len(entries) > MAX_ENTRIES:
        raise UnsafeWorkbook(
            f"the workbook has {len(entries):,} zip entries; real workbooks have a few dozen (limit {MAX_ENTRIES:,})"
        )
    for info in entries:
        if info.flag_bits & 0x1:
            raise EncryptedWorkbook(
                f"the workbook's zip entries are encrypted ({info.filename}); remove the password and upload again"
            )
        if info.compress_type not in _METHODS:
            raise UnsafeWorkbook(
                f"{info.filename} uses zip compression method {info.compress_type}; "
                "xlsx files use only stored or deflated"
            )
        if info.file_size > RATIO_MIN_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise UnsafeWorkbook(
                f"{info.filename} would inflate from {_size(info.compress_size)} to {_size(info.file_size)} "
                f"({info.file_size // max(info.compress_size, 1):,}x; real workbooks stay far below {MAX_RATIO}x): "
                "refused as a zip bomb"
            )
    # Before the workbook is parsed every XML part but the worksheets counts (the reader checks
    # the exact set again).
    check_in_memory(
        archive,
        [i.filename for i in entries if i.filename.endswith((".xml", ".rels")) and not _WORKSHEET.match(i.filename)],
    )


def refuse_dtd(xml: bytes, part: str) -> None:
    match = _DTD.search(xml)
    if match is not None:
        raise UnsafeWorkbook(
            f"{part} declares an XML document type ({match.group().decode()}), which xlsx files never do: "
            "refused (entity definitions can expand to gigabytes: an XML entity bomb)"
        )


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} bytes"
