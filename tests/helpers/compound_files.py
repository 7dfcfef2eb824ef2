"""Compound files (OLE2, MS-CFB) for the upload type check: a really password-encrypted workbook, the
same container with its streams renamed to those of a legacy .xls, .doc or .ppt, and hostile variants
of it made by rewriting its header, FAT or directory."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from functools import lru_cache

import olefile

from tests.helpers.corpus import encrypted_xlsx

SECTOR = 512  # msoffcrypto writes version 3 files, of 512-byte sectors
ENTRY = 128  # bytes per directory entry
END_OF_CHAIN = 0xFFFFFFFE
FAT_SECTOR_MARK = 0xFFFFFFFD  # the FAT's entry for a sector that holds part of the FAT
# Header fields (MS-CFB 2.2): byte offsets of 32-bit little-endian numbers.
NUM_FAT_SECTORS = 44
FIRST_DIRECTORY_SECTOR = 48
FIRST_DIFAT_SECTOR = 68
NUM_DIFAT_SECTORS = 72
HEADER_DIFAT = 76  # the first 109 FAT sector numbers


@lru_cache(maxsize=1)
def encrypted() -> bytes:
    return encrypted_xlsx()


def _offset(sector: int) -> int:
    return (sector + 1) * SECTOR


def _directory_chain(ole: olefile.OleFileIO) -> list[int]:
    chain, sector = [], ole.first_dir_sector
    while sector != END_OF_CHAIN:
        chain.append(sector)
        sector = ole.fat[sector]
    return chain


def renamed(names: Mapping[str, str]) -> bytes:
    """The encrypted workbook's container with directory entries renamed (old name -> new name)."""
    data = bytearray(encrypted())
    with olefile.OleFileIO(bytes(data)) as ole:
        chain = _directory_chain(ole)
        entries = [entry for entry in ole.direntries if entry is not None and entry.name in names]
    assert len(entries) == len(names), "every name to rename is in the directory"
    for entry in entries:
        at = _offset(chain[entry.sid // (SECTOR // ENTRY)]) + entry.sid % (SECTOR // ENTRY) * ENTRY
        name = names[entry.name].encode("utf-16-le") + b"\x00\x00"
        data[at : at + 64] = name.ljust(64, b"\x00")
        struct.pack_into("<H", data, at + 64, len(name))
    return bytes(data)


def fat_sector() -> int:
    """The sector holding the encrypted workbook's FAT."""
    with olefile.OleFileIO(encrypted()) as ole:
        return ole.fat.index(FAT_SECTOR_MARK)


def difat_loop(listed: int = END_OF_CHAIN) -> bytes:
    """A header claiming 2**32 - 1 FAT sectors, listed by a DIFAT sector that names itself as the next
    one: a reader that trusts the header goes round the loop 33 million times, and with ``listed``
    a real sector (``fat_sector()``) its FAT grows by 127 sectors each time."""
    fat_sectors = 0xFFFFFFFF
    data = bytearray(encrypted())
    difat_sector = len(data) // SECTOR - 1  # appended below
    block = [listed] * (SECTOR // 4 - 1) + [difat_sector]
    data += struct.pack(f"<{len(block)}I", *block)
    struct.pack_into("<I", data, NUM_FAT_SECTORS, fat_sectors)
    struct.pack_into("<I", data, NUM_DIFAT_SECTORS, (fat_sectors - 109 + 126) // 127)
    struct.pack_into("<I", data, FIRST_DIFAT_SECTOR, difat_sector)
    return bytes(data)


def directory_loop(size: int = 8 << 20) -> bytes:
    """A ``size``-byte file whose directory chain leads back to its start, under a FAT of 109 sectors
    (all the same one): a reader without a bound reads the directory until the FAT's end, ~7 MB."""
    data = bytearray(encrypted())
    with olefile.OleFileIO(bytes(data)) as ole:
        chain = _directory_chain(ole)
    fat = fat_sector()
    struct.pack_into("<I", data, _offset(fat) + chain[-1] * 4, chain[0])
    struct.pack_into("<109I", data, HEADER_DIFAT, *[fat] * 109)
    struct.pack_into("<I", data, NUM_FAT_SECTORS, 109)
    return bytes(data.ljust(size, b"\x00"))
