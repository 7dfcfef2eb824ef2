"""Stream a multipart upload straight into storage, with a size limit, a checksum and a type check.

Starlette's form parser would first spool the whole file to a temporary file (and knows no size
limit for files); this parser writes the ``file`` field's bytes to the upload's incoming path as
they arrive, so a request never needs more memory than one network chunk, and an oversized body
is refused as soon as it crosses the limit.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from aimq_tabular import sniff
from aimq_tabular.formats import Format

FIELD = "file"
# Multipart framing around the file: boundaries, part headers, other small fields.
FRAMING_ALLOWANCE = 64 * 1024
_NAME_MAX = 255


class UploadRejected(Exception):
    """The request cannot become an upload; ``status`` and ``detail`` form the answer."""

    def __init__(self, status: int, detail: str, **extra: Any):
        self.status = status
        self.detail = detail
        self.extra = extra
        super().__init__(detail)

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, **self.extra}


@dataclass(frozen=True)
class ReceivedFile:
    path: Path
    original_name: str
    size: int
    sha256: str
    format: Format


def boundary_of(content_type: str | None) -> bytes:
    kind, params = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise UploadRejected(
            415,
            f"send the file as multipart/form-data with a field named {FIELD!r} (got Content-Type {content_type!r})",
        )
    return params[b"boundary"]


def clean_name(raw: str) -> str:
    """The client's file name as metadata: no directories, no control characters, bounded length."""
    name = re.split(r"[\\/]", raw)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    if not name.strip("."):  # "." and ".." name directories, not files
        return "upload"
    return name[:_NAME_MAX]


async def receive(chunks: AsyncIterator[bytes], content_type: str | None, target: Path, max_bytes: int) -> ReceivedFile:
    """Write the ``file`` field of a multipart body to ``target``; raise UploadRejected if unfit.

    On any rejection ``target`` is removed: nothing of a refused upload stays on disk.
    """
    receiver = _Receiver(target, max_bytes)
    parser = MultipartParser(boundary_of(content_type), receiver.callbacks())
    try:
        async for chunk in chunks:
            parser.write(chunk)
            if receiver.too_large:
                raise UploadRejected(
                    413,
                    f"the file is larger than the limit of {max_bytes:,} bytes (AIMQ_MAX_UPLOAD_BYTES)",
                    limit_bytes=max_bytes,
                )
        parser.finalize()
        return receiver.result()
    except MultipartParseError as exc:
        receiver.discard()
        raise UploadRejected(422, f"the multipart body is malformed: {exc}") from exc
    except BaseException:
        receiver.discard()
        raise


class _Receiver:
    def __init__(self, target: Path, max_bytes: int):
        self.target = target
        self.max_bytes = max_bytes
        self.too_large = False
        self._file: IO[bytes] | None = None
        self._files = 0
        self._in_file = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._name = ""
        self._size = 0
        self._digest = hashlib.sha256()
        self._head = bytearray()
        self._ended = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._disposition = b""
        self._in_file = False

    def _header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._disposition)
        if params.get(b"name") != FIELD.encode() or b"filename" not in params:
            return  # other form fields are ignored
        self._files += 1
        if self._files > 1:
            raise UploadRejected(422, f"send exactly one file in the {FIELD!r} field; this request has several")
        self._name = clean_name(params[b"filename"].decode("utf-8", "replace"))
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.target, "wb", buffering=1 << 20)
        self._in_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file or self._file is None or self.too_large:
            return
        piece = data[start:end]
        self._size += len(piece)
        if self._size > self.max_bytes:
            self.too_large = True
            return
        if len(self._head) < sniff.HEAD_BYTES:
            self._head.extend(piece[: sniff.HEAD_BYTES - len(self._head)])
        self._digest.update(piece)
        self._file.write(piece)

    def _part_end(self) -> None:
        self._in_file = False

    def _end(self) -> None:
        self._ended = True

    def result(self) -> ReceivedFile:
        if self._file is not None:
            self._file.close()
        if not self._ended:
            self.discard()
            raise UploadRejected(422, "the multipart body ended early (no closing boundary): the upload was cut off")
        if self._files == 0:
            raise UploadRejected(422, f"no file: send the file in a multipart field named {FIELD!r} with a filename")
        if self._size == 0:
            self.discard()
            raise UploadRejected(422, "the file is empty")
        try:
            fmt = sniff.identify(self.target, bytes(self._head))
        except sniff.UnsupportedType as exc:
            self.discard()
            raise UploadRejected(
                415, f"unsupported file type: {exc}. Upload an xlsx workbook or a UTF-8 CSV file"
            ) from exc
        except sniff.DamagedFile as exc:
            self.discard()
            raise UploadRejected(422, str(exc)) from exc
        return ReceivedFile(self.target, self._name, self._size, self._digest.hexdigest(), fmt)

    def discard(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
        self.target.unlink(missing_ok=True)
