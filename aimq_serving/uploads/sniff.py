"""What an upload is, judged by its bytes (never by its name or the client's Content-Type)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from aimq_serving.uploads.storage import Format

HEAD_BYTES = 1 << 16
_ZIP = b"PK\x03\x04"
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_OTHER = {
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip archive",
    b"PK\x05\x06": "an empty zip archive",
}


class UnsupportedType(ValueError):
    """Not an xlsx workbook or a UTF-8 CSV file (415)."""


class DamagedFile(ValueError):
    """Recognisably an xlsx file, but its zip structure is broken (422)."""


def detect(head: bytes) -> Format:
    """The format from the first bytes (up to HEAD_BYTES) of the file."""
    if head.startswith(_ZIP):
        return "xlsx"  # confirmed by check_xlsx once the whole file is there
    if head.startswith(_OLE2):
        raise UnsupportedType(
            "this is a legacy Excel .xls (or another Office 97-2003) file; save it as .xlsx or CSV and upload again"
        )
    for magic, what in _OTHER.items():
        if head.startswith(magic):
            raise UnsupportedType(f"this is {what}, not an xlsx workbook or a CSV file")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnsupportedType("this is UTF-16 text; save the CSV as UTF-8 (\"CSV UTF-8\" in Excel)")
    if b"\x00" in head:
        raise UnsupportedType("this is a binary file, not an xlsx workbook or a CSV file")
    body = head[3:] if head.startswith(b"\xef\xbb\xbf") else head
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The head may end inside a multi-byte character: only an error before the last 3 bytes counts.
        if exc.start < len(body) - 3 or len(body) < HEAD_BYTES - 3:
            raise UnsupportedType(
                f"this is text but not UTF-8 (invalid byte at offset {exc.start}); save the CSV as UTF-8"
            ) from exc
    return "csv"


def check_xlsx(path: Path) -> None:
    """Confirm that a zip file is an xlsx workbook (its central directory lists xl/workbook.xml)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except zipfile.BadZipFile as exc:
        raise DamagedFile(f"the file starts like an xlsx workbook but its zip structure is damaged: {exc}") from exc
    if "xl/workbook.xml" in names:
        return
    if "xl/workbook.bin" in names:
        raise UnsupportedType("this is a binary Excel workbook (.xlsb); save it as .xlsx or CSV")
    if "word/document.xml" in names:
        raise UnsupportedType("this is a Word document, not an xlsx workbook")
    if "ppt/presentation.xml" in names:
        raise UnsupportedType("this is a PowerPoint presentation, not an xlsx workbook")
    if "content.xml" in names:
        raise UnsupportedType("this is an OpenDocument file (.ods); save it as .xlsx or CSV")
    raise UnsupportedType("this is a zip archive, not an xlsx workbook")
