"""What an upload is, judged by its bytes (never by its name or the client's Content-Type)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import BinaryIO

import olefile

from aimq_tabular import xlsx_guard
from aimq_tabular.formats import Format

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
    """Recognisably an xlsx file, but its zip structure is broken, or it is built to cost far more
    to read than a real workbook (a zip bomb) (422)."""


def identify(path: Path, head: bytes) -> Format:
    """The format of the complete file at ``path`` whose first bytes are ``head``."""
    if head.startswith(_OLE2):
        raise UnsupportedType(_ole_kind(path))
    fmt = detect(head)
    if fmt == "xlsx":
        check_xlsx(path)
    return fmt


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
        raise UnsupportedType('this is UTF-16 text; save the CSV as UTF-8 ("CSV UTF-8" in Excel)')
    if b"\x00" in head:
        # UTF-16 without a byte order mark: mostly text with every other byte zero.
        if max(head[0::2].count(0), head[1::2].count(0)) > len(head) * 3 // 8:
            raise UnsupportedType(
                'this is UTF-16 text without a byte order mark; save the CSV as UTF-8 ("CSV UTF-8" in Excel)'
            )
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
            if "xl/workbook.xml" in names:
                xlsx_guard.check_archive(archive)
                return
    except zipfile.BadZipFile as exc:
        raise DamagedFile(f"the file starts like an xlsx workbook but its zip structure is damaged: {exc}") from exc
    except xlsx_guard.EncryptedWorkbook as exc:
        raise UnsupportedType(str(exc)) from exc
    except xlsx_guard.UnsafeWorkbook as exc:
        raise DamagedFile(str(exc)) from exc
    if "xl/workbook.bin" in names:
        raise UnsupportedType("this is a binary Excel workbook (.xlsb); save it as .xlsx or CSV")
    if "word/document.xml" in names:
        raise UnsupportedType("this is a Word document, not an xlsx workbook")
    if "ppt/presentation.xml" in names:
        raise UnsupportedType("this is a PowerPoint presentation, not an xlsx workbook")
    if "content.xml" in names:
        raise UnsupportedType("this is an OpenDocument file (.ods); save it as .xlsx or CSV")
    raise UnsupportedType("this is a zip archive, not an xlsx workbook")


# --- OLE2 compound files (MS-CFB): what Excel writes for a password-protected workbook, and .xls ---
_ENCRYPTED_OOXML = {"EncryptionInfo", "EncryptedPackage"}
_LEGACY = {
    "Workbook": "a legacy Excel .xls workbook",
    "Book": "a legacy Excel .xls workbook",
    "WordDocument": "a Word .doc document",
    "PowerPoint Document": "a PowerPoint .ppt presentation",
}
# What olefile may read of an upload to list its directory: the header, the FAT (4 bytes per sector:
# 1/128 of a file of 512-byte sectors, 1/1024 with 4096-byte ones), the DIFAT and the directory (a
# handful of sectors in real files). A chain that loops or a header claiming more FAT than the file
# holds stops there, and so does a file of 512-byte sectors over ~60 MB: all get the general answer.
# The budget also bounds olefile's own work, which grows with the square of the FAT sectors it loads
# (it concatenates them one at a time): here at most 1,024 of them.
_OLE_READ_BUDGET = 512 * 1024


class _OverBudget(Exception):
    pass


class _BudgetedReader:
    """A binary file for olefile that refuses to read more than ``budget`` bytes in all."""

    def __init__(self, fh: BinaryIO, budget: int):
        self._fh = fh
        self._budget = budget
        self._left = budget

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self._left:
            raise _OverBudget(f"more than {self._budget:,} bytes read")
        self._left -= size
        return self._fh.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    @property
    def closed(self) -> bool:
        return self._fh.closed


def _ole_kind(path: Path) -> str:
    names = _cfb_names(path)
    if _ENCRYPTED_OOXML <= names:
        return (
            'this workbook is encrypted with a password (Excel\'s "Encrypt with Password"); '
            "remove the password in Excel (File > Info > Protect Workbook), save, and upload again"
        )
    for stream, what in _LEGACY.items():
        if stream in names:
            return f"this is {what} (Office 97-2003); save it as .xlsx or CSV and upload again"
    return "this is a legacy Excel .xls (or another Office 97-2003) file; save it as .xlsx or CSV and upload again"


def _cfb_names(path: Path) -> set[str]:
    """The names of the streams and storages at the top of a compound file's directory; empty if
    olefile cannot read it within the read budget."""
    try:
        with open(path, "rb") as fh, olefile.OleFileIO(_BudgetedReader(fh, _OLE_READ_BUDGET)) as ole:
            return {entry[0] for entry in ole.listdir(streams=True, storages=True)}
    except Exception:
        # Whatever a damaged or hostile file makes olefile raise (OSError for a broken structure,
        # RecursionError for a degenerate directory tree, ...): the file is refused either way, only
        # the answer is the general one.
        return set()
