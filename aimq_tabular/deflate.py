"""ISA-L's deflate (the ``isal`` package) for the large zip members AIMQ writes and reads.

A 1,000,000-row sheet is ~620 MB of XML. Measured on it here (2 cores): zlib level 1 deflates it in
2.7 s, ISA-L level 1 in 0.5 s (and a little smaller); ISA-L inflates it in 1.5 s where zlib takes 2.0 s.
Both write and read the same deflate format, so files stay what any zip reader reads.

zipfile has no hook for another codec: the member streams it opens get ISA-L's (zlib-compatible)
compressor or decompressor in place of zlib's, before any byte goes through them. Only the streams
handed to these functions change; every other use of zipfile in the process keeps zlib's deflate.

zipfile's CRC-32 check of every member read and written is ISA-L's for the whole process (see
``zipfile.crc32`` below): the same checksum, so no zip reader or writer can tell.
"""

from __future__ import annotations

import zipfile
import zlib
from typing import IO

from isal import isal_zlib

# zipfile checks each member it reads, and stamps each it writes, with its module-level ``crc32``
# (zlib's), looked up at every call. ISA-L's computes the same CRC-32 (same polynomial, same running
# value; tests/tabular/test_deflate.py compares them) about 7x faster: 200 MB in 11 ms instead of 74 ms
# here. Cutting a 1,000,000-row sheet into parts checks ~620 MB as it inflates it and stamps it again
# as it writes the parts: zlib's crc32 was 0.42 s of the reader's 2.3 s of CPU (cProfile).
zipfile.crc32 = isal_zlib.crc32  # type: ignore[attr-defined]

LEVEL = 1  # ISA-L's levels are 0-3; 1 deflates the sheet XML as well as zlib's 1, five times faster


def deflating(stream: IO[bytes]) -> IO[bytes]:
    """``stream`` (``ZipFile.open(name, "w")`` of a deflated member, nothing written yet) with ISA-L's compressor."""
    if getattr(stream, "_compressor", None) is not None and getattr(stream, "_file_size", 1) == 0:
        stream._compressor = isal_zlib.compressobj(LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)  # type: ignore[attr-defined]
    return stream


def inflating(stream: IO[bytes]) -> IO[bytes]:
    """``stream`` (``ZipFile.open(name)`` of a deflated member, nothing read yet) with ISA-L's decompressor."""
    if getattr(stream, "_compress_type", None) == zipfile.ZIP_DEFLATED and getattr(stream, "_readbuffer", b"") == b"":
        stream._decompressor = isal_zlib.decompressobj(-zlib.MAX_WBITS)  # type: ignore[attr-defined]
    return stream
