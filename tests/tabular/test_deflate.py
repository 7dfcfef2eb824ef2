"""ISA-L in zipfile (aimq_tabular/deflate.py): the same bytes and checksums as zlib's, and damage
still refused."""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import pytest

from aimq_tabular import deflate


def test_zipfile_crc32_is_isal_and_gives_zlibs_values() -> None:
    assert zipfile.crc32 is deflate.isal_zlib.crc32
    data = os.urandom(3 << 20) + b"<row/>" * 1000
    running_isal = running_zlib = 0
    for start in range(0, len(data), 1 << 20):  # a running value, as zipfile keeps it
        piece = memoryview(data)[start : start + (1 << 20)]
        running_isal, running_zlib = zipfile.crc32(piece, running_isal), zlib.crc32(piece, running_zlib)
        assert running_isal == running_zlib
    assert zipfile.crc32(b"") == zlib.crc32(b"") == 0
    assert zipfile.crc32(data, 12345) == zlib.crc32(data, 12345)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
def test_a_member_written_and_read_through_isal_checks_out_and_damage_is_refused(
    tmp_path: Path, compression: int
) -> None:
    path = tmp_path / "book.zip"
    payload = b"".join(b'<row r="%d"><c r="A%d"><v>%d</v></c></row>' % (i, i, i * 7) for i in range(50_000))
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        with zf.open("xl/worksheets/sheet1.xml", "w") as member:
            stream = deflate.deflating(member) if compression == zipfile.ZIP_DEFLATED else member
            stream.write(payload)
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("xl/worksheets/sheet1.xml").CRC == zlib.crc32(payload)  # stamped as zlib would
        with zf.open("xl/worksheets/sheet1.xml") as member:
            assert deflate.inflating(member).read() == payload

    # One byte of the member's data changed: its checksum no longer matches, and the read says so.
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("xl/worksheets/sheet1.xml")
    at = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.compress_size // 2
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as zf, pytest.raises((zipfile.BadZipFile, zlib.error, OSError)):
        with zf.open("xl/worksheets/sheet1.xml") as member:
            deflate.inflating(member).read()
