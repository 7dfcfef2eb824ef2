"""Read the data sheet of an xlsx file in bounded memory, as Arrow record batches.

fastexcel (calamine) parses a sheet about ten times faster than openpyxl, but it builds the whole
sheet in memory first: measured here, a full 1,048,575 x 12 sheet peaks at about 1.2 GB in the
reader alone. So the sheet's XML is cut, between ``</row>`` tags, into parts of ``rows_per_part``
rows; each part is written as a small stand-alone workbook (the original workbook's parts, the
header row, then that part's rows) and handed to fastexcel. Peak memory then depends on the part
size, not on the file, and calamine still does all the XML and cell-type work.

Cutting between ``</row>`` tags is safe: ``<`` is always escaped inside XML text, so the byte
sequence can only be markup.

The data need not start at the first sheet's first row: ``locate_data`` looks for the header (a
row holding given column names) in the first rows of each visible sheet, so a title row above the
header or an instructions sheet in front of the data is skipped, and row numbers stay the sheet's.
"""

from __future__ import annotations

import queue
import re
import tempfile
import threading
import time
import zipfile
from collections.abc import Collection, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Protocol
from xml.etree import ElementTree

import fastexcel
import pyarrow as pa

from aimq_tabular import deflate, xlsx_cells, xlsx_guard
from aimq_tabular.part_parsers import InlineParsers, ParsedPart, PartParsers

_MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"

_SHEET_DATA_OPEN = re.compile(rb"<(?:(\w+):)?sheetData\b[^>]*?(/?)>")
_ROW_END = re.compile(rb"</(?:\w+:)?row>")
_ROW_NUMBER = re.compile(rb'(<(?:\w+:)?row\b[^>]*?\sr=")(\d+)"')
_CELL_REF = re.compile(rb'(<(?:\w+:)?c\b[^>]*?\sr=")([A-Z]+)\d+"')
_HAS_VALUE = re.compile(rb"<(?:\w+:)?(?:v|t)\b[^>]*>[^<]")
_DIMENSION = re.compile(rb"<(?:\w+:)?dimension\b[^>]*/>")
# An error cell (``#N/A``, ``#DIV/0!``...): its type attribute, rewritten so it reads as its text.
_ERROR_CELL = re.compile(rb'(<(?:\w+:)?c\b[^>]*?\s)t="e"')
_EMPTY_SHEET = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<worksheet xmlns="' + _MAIN_NS.encode() + b'"><sheetData/></worksheet>'
)


class XlsxFormatError(ValueError):
    """The file is not a workbook we can read; the message says why, for the user."""


@dataclass(frozen=True)
class Sheet:
    name: str
    part: str
    visible: bool


@dataclass(frozen=True)
class DataLocation:
    """Where a sheet's table starts: its header row, as the sheet numbers it."""

    sheet: str
    header_row: int  # the sheet's own row number (1 = the first row)
    header_found: bool  # False: no row holds the columns asked for; the sheet's first row is used
    visible_sheets: tuple[str, ...]
    header_ordinal: int = 0  # which of the sheet's rows with a value is the header (0 = the first)
    # The header row's cells with a value, as (sheet column, 0 = A; text): the names as the sheet
    # shows them, where fastexcel's column names make repeated ones unique (``kilometers_1``).
    header: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class _Layout:
    sheets: tuple[Sheet, ...]
    keep: tuple[str, ...]  # metadata parts every stand-alone part needs (workbook, styles, strings)

    def sheet(self, name: str | None) -> Sheet:
        for sheet in self.sheets:
            if name is None or sheet.name == name:
                return sheet
        raise XlsxFormatError(f"the workbook has no sheet {name!r}")


# Rows with a value searched for the header, per sheet: a title, notes and blank lines above a
# table fit easily; a sheet whose table starts further down is not what the upload means.
HEADER_SEARCH_ROWS = 30


def iter_xlsx_batches(
    path: Path,
    *,
    location: DataLocation | None = None,
    rows_per_part: int = 100_000,
    work_dir: Path | None = None,
    block_bytes: int = 8 << 20,
    merged: list[str] | None = None,
    parsers: int = 1,
    stages: StageLog | None = None,
) -> Iterator[pa.RecordBatch]:
    """Yield a sheet's rows below its header as record batches; the header holds the column names.

    ``merged``, when given, receives the sheet's merged ranges (``C5:C9``) once the last batch was
    yielded: the sheet lists them after its rows.

    ``location`` (from ``locate_data``) says which sheet and row; without it, the first sheet and
    its first row with a value. Every batch has the same column names (a sheet with only a header
    row yields one empty batch); the first batch's first row is the row below the header, and
    every row of the sheet after it is a row of the batches (blank ones too), so row numbers can
    be counted from the header's. A part ends with the first block of ``block_bytes`` of
    decompressed XML that takes it to ``rows_per_part`` rows or more. Column types are decided
    per batch: a column whose cells are of one kind gets that type, a column mixing kinds gets
    ``xlsx_cells.MIXED`` (every cell keeps its kind), so callers must not assume one schema.

    Parts are cut in a thread and parsed by ``parsers`` worker processes (``part_parsers``:
    calamine holds the GIL while it parses), so the caller's work on one batch overlaps the reading
    of the next ones. At most ``parsers + 1`` parts wait at any time, which bounds memory and
    temporary disk use. ``stages``, when given, is told when each part was cut (``"split"``) and
    parsed (``"parse"``), in ``time.monotonic()``, with the CPU seconds it took, as its batch is yielded.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise XlsxFormatError(f"not a readable xlsx file: {exc}") from exc
    with archive, tempfile.TemporaryDirectory(dir=work_dir, prefix="xlsx-parts-") as tmp:
        layout = _layout(archive)
        sheet = layout.sheet(location.sheet if location else None)
        ordinal = location.header_ordinal if location else 0
        metadata = {name: _read_member(archive, name) for name in layout.keep}
        parts = _PartPipeline(
            archive, layout, sheet, ordinal, metadata, Path(tmp), rows_per_part, block_bytes, merged, parsers
        )
        names: list[str] | None = None
        try:
            for index, (batch, split, parsed) in enumerate(parts):
                if stages is not None:
                    stages("split", index, *split)
                    stages("parse", index, parsed.started, parsed.ended, parsed.cpu)
                if names is None:
                    names = batch.schema.names
                elif batch.schema.names != names:
                    # Every part starts with the same header row, so this cannot happen for a
                    # well-formed sheet; checked so a mismatch can never silently shift columns.
                    raise XlsxFormatError("inconsistent columns while reading the sheet")
                yield batch
        finally:
            parts.close()
            if stages is not None:
                stages.parsers_memory(parts.own_peak_mb)


def locate_data(
    path: Path, columns: Collection[str], *, work_dir: Path | None = None, block_bytes: int = 1 << 20
) -> DataLocation:
    """The first visible sheet whose first ``HEADER_SEARCH_ROWS`` rows with a value include a row
    holding all ``columns`` (names compared trimmed and case-insensitively), and that row.

    When no sheet has one, the first visible sheet and its first row with a value, with
    ``header_found`` False: the caller reports which columns are missing. Hidden sheets are
    never used nor named (the user may not know they exist).
    """
    wanted = {c.strip().lower() for c in columns}
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise XlsxFormatError(f"not a readable xlsx file: {exc}") from exc
    with archive, tempfile.TemporaryDirectory(dir=work_dir, prefix="xlsx-head-") as tmp:
        layout = _layout(archive)
        candidates = [s for s in layout.sheets if s.visible] or list(layout.sheets)
        names = tuple(s.name for s in candidates)
        metadata: dict[str, bytes] | None = None
        first: tuple[Sheet, int] | None = None
        for sheet in candidates:
            rows, opened = _head_rows(archive, sheet, block_bytes)
            if not rows:
                continue
            if first is None:
                first = (sheet, rows[0][1])
            if metadata is None:
                metadata = {name: _read_member(archive, name) for name in layout.keep}
            found = _find_header([row for row, _ in rows], wanted, layout, sheet, opened, metadata, Path(tmp))
            if found is not None:
                ordinal, header = found
                return DataLocation(sheet.name, rows[ordinal][1], True, names, ordinal, header)
        sheet, row = first if first is not None else (candidates[0], 1)
        return DataLocation(sheet.name, row, False, names, 0)


def _head_rows(archive: zipfile.ZipFile, sheet: Sheet, block: int) -> tuple[list[tuple[bytes, int]], _OpenSheet]:
    """The sheet's first rows with a value, with their row numbers (at most HEADER_SEARCH_ROWS)."""
    stream, opened = _open_sheet(archive, sheet, block)
    with stream:
        if opened.empty:
            return [], opened
        buf, row_end = opened.buf, b"</" + opened.prefix + b"row>"
        data_end = b"</" + opened.prefix + b"sheetData>"
        while True:
            data = opened.blocks.read()
            buf += data
            if (
                not data
                or data_end in buf
                or buf.count(row_end) >= 4 * HEADER_SEARCH_ROWS
                or len(buf) > xlsx_guard.MAX_ROW_BYTES
            ):
                break
    out: list[tuple[bytes, int]] = []
    position = 0  # rows without numbers are numbered by position
    pos = 0
    chunk = bytes(buf)
    for end in _ROW_END.finditer(chunk):
        row = chunk[pos : end.end()]
        pos = end.end()
        own = _ROW_NUMBER.search(row)
        position = int(own.group(2)) if own else position + 1
        if _HAS_VALUE.search(row):
            out.append((row, position))
            if len(out) >= HEADER_SEARCH_ROWS:
                break
    return out, opened


def _find_header(
    rows: list[bytes],
    wanted: set[str],
    layout: _Layout,
    sheet: Sheet,
    opened: _OpenSheet,
    metadata: dict[str, bytes],
    tmp: Path,
) -> tuple[int, tuple[tuple[int, str], ...]] | None:
    """Which of ``rows`` holds all ``wanted`` names, and its cells with a value (``DataLocation.header``);
    calamine reads the cells (shared strings, inline text) from a small workbook of these rows,
    numbered 1, 2, 3... so row i is grid row i."""
    footer = b"</" + opened.prefix + b"sheetData></" + opened.prefix + b"worksheet>"
    part = _Part(tmp / "head.xlsx", layout, sheet, metadata, opened.header, footer)
    try:
        for number, row in enumerate(rows, start=1):
            part.write(_renumber(row, number))
        path = part.finish()
    except BaseException:
        part.abort()
        raise
    try:
        grid = fastexcel.read_excel(str(path)).load_sheet(sheet.name, header_row=None, dtypes="string")
        positions = [c.absolute_index for c in grid.selected_columns]
        cells = grid.to_arrow()
    except Exception:  # noqa: BLE001 - a head calamine cannot read has no header; the sheet is read (and refused) later
        return None
    finally:
        path.unlink(missing_ok=True)
    for i, values in enumerate(zip(*(c.to_pylist() for c in cells.columns))):
        if wanted <= {v.strip().lower() for v in values if v}:
            return i, tuple((p, v) for p, v in zip(positions, values) if v is not None)
    return None


def _renumber(row: bytes, number: int) -> bytes:
    """The row and its cell references as sheet row ``number`` (rows without numbers get one)."""
    text = str(number).encode()
    if _ROW_NUMBER.search(row):
        out = _ROW_NUMBER.sub(lambda m: m.group(1) + text + b'"', row, count=1)
    else:
        out = re.sub(rb"<((?:\w+:)?row)\b", lambda m: b"<" + m.group(1) + b' r="' + text + b'"', row, count=1)
    return _CELL_REF.sub(lambda m: m.group(1) + m.group(2) + text + b'"', out)


class StageLog(Protocol):
    def __call__(self, stage: str, part: int, started: float, ended: float, cpu: float, /) -> None: ...

    def parsers_memory(self, own_peak_mb: float, /) -> None:
        """The parser processes' peak memory of their own, added up (``PartParsers.own_peak_mb``)."""


_Queued = tuple["Future[tuple[bytes, float, float, float]]", tuple[float, float, float]]

# A sheet whose XML is at most this big is parsed in the reader's own split thread, not by parser
# processes: forking them from a run process (~600 MB resident) and shutting them down cost ~50 ms,
# a sixth of a small upload's whole run (docs/batch.md, "Many small files"), while calamine parses
# 1 MiB of sheet XML (~2,500 rows of the listings' columns) in about 20 ms. The size is the one the
# zip declares; a sheet that lies about it is still read correctly, by one thread.
INLINE_SHEET_BYTES = 1 << 20


class _PartPipeline:
    """split thread -> queue of parse futures (bounded) -> the consumer, in order."""

    def __init__(
        self,
        archive: zipfile.ZipFile,
        layout: _Layout,
        sheet: Sheet,
        ordinal: int,
        metadata: dict[str, bytes],
        tmp: Path,
        rows: int,
        block: int,
        merged: list[str] | None,
        parsers: int,
    ):
        self._queue: queue.Queue[_Queued | BaseException | None] = queue.Queue(maxsize=parsers + 1)
        self._stop = threading.Event()
        # Forked before the split thread starts (part_parsers); each worker reads its parts in order.
        # A small sheet is parsed where it is cut: see INLINE_SHEET_BYTES.
        self._parsers: PartParsers | InlineParsers = (
            InlineParsers(sheet.name, sheet.part)
            if archive.getinfo(sheet.part).file_size <= INLINE_SHEET_BYTES
            else PartParsers(sheet.name, sheet.part, parsers)
        )
        self._thread = threading.Thread(
            target=self._split,
            args=(archive, layout, sheet, ordinal, metadata, tmp, rows, block, merged),
            name="xlsx-split",
            daemon=True,
        )
        self._thread.start()

    def _split(
        self,
        archive: zipfile.ZipFile,
        layout: _Layout,
        sheet: Sheet,
        ordinal: int,
        metadata: dict[str, bytes],
        tmp: Path,
        rows: int,
        block: int,
        merged: list[str] | None,
    ) -> None:
        try:
            parts = _split_sheet(archive, layout, sheet, ordinal, metadata, tmp, rows, block, merged)
            while True:
                started, cpu = time.monotonic(), time.thread_time()
                part = next(parts, None)
                if part is None or self._stop.is_set():
                    break
                self._put((self._parsers.submit(part), (started, time.monotonic(), time.thread_time() - cpu)))
            self._put(None)
        except BaseException as exc:  # handed to the consumer, which raises it in its own thread
            self._put(exc)

    def _put(self, item: _Queued | BaseException | None) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[tuple[pa.RecordBatch, tuple[float, float, float], ParsedPart]]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            future, split = item
            parsed = self._parsers.result(future)
            yield parsed.batch, split, parsed

    @property
    def own_peak_mb(self) -> float:
        return self._parsers.own_peak_mb

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._parsers.close()


def _read_member(archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        # Read in steps: zipfile's read() of a whole member inflates everything its compressed
        # bytes hold before cutting to the declared size, so a member that lies about its size
        # would take gigabytes; in steps it takes the declared size (checked) and one step.
        with archive.open(name) as member:
            data = b"".join(iter(lambda: member.read(1 << 20), b""))
        xlsx_guard.refuse_dtd(data, name)
        return data
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise XlsxFormatError(f"the xlsx file is damaged ({name}: {exc})") from exc
    except xlsx_guard.UnsafeWorkbook as exc:
        raise XlsxFormatError(str(exc)) from exc


def _check_archive(archive: zipfile.ZipFile, in_memory: tuple[str, ...] | None = None) -> None:
    try:
        if in_memory is None:
            xlsx_guard.check_archive(archive)
        else:
            xlsx_guard.check_in_memory(archive, in_memory)
    except (xlsx_guard.EncryptedWorkbook, xlsx_guard.UnsafeWorkbook) as exc:
        raise XlsxFormatError(str(exc)) from exc


def _layout(archive: zipfile.ZipFile) -> _Layout:
    names = set(archive.namelist())
    if "xl/workbook.xml" not in names:
        raise XlsxFormatError("not an xlsx workbook (xl/workbook.xml is missing)")
    _check_archive(archive)  # before anything is inflated
    try:
        workbook = ElementTree.fromstring(_read_member(archive, "xl/workbook.xml"))
        rels = ElementTree.fromstring(_read_member(archive, "xl/_rels/workbook.xml.rels"))
    except (ElementTree.ParseError, KeyError) as exc:
        raise XlsxFormatError(f"the xlsx file is damaged (workbook: {exc})") from exc
    targets = {r.get("Id"): r.get("Target", "") for r in rels.iter(f"{{{_PKG_REL_NS}}}Relationship")}
    sheets = []
    for entry in workbook.iter(f"{{{_MAIN_NS}}}sheet"):
        target = targets.get(entry.get(f"{{{_REL_NS}}}id"))
        if target and _resolve(target) in names:
            visible = entry.get("state", "visible") == "visible"  # not "hidden" or "veryHidden"
            sheets.append(Sheet(name=entry.get("name", ""), part=_resolve(target), visible=visible))
    if not sheets:
        raise XlsxFormatError("the workbook has no readable worksheet")
    parts = {sheet.part for sheet in sheets}
    # Everything but worksheets and binary payloads (images, printer settings, macros): calamine
    # needs the workbook, its relationships, shared strings and styles, and nothing else.
    keep = tuple(n for n in names if (n.endswith(".xml") or n.endswith(".rels")) and n not in parts)
    _check_archive(archive, keep)
    return _Layout(sheets=tuple(sheets), keep=keep)


def _resolve(target: str) -> str:
    if target.startswith("/"):
        return target.lstrip("/")
    parts: list[str] = []
    for piece in PurePosixPath("xl", target).parts:
        if piece == "..":
            if parts:
                parts.pop()
        elif piece != ".":
            parts.append(piece)
    return "/".join(parts)


@dataclass
class _OpenSheet:
    """A worksheet stream positioned just after its ``<sheetData>`` tag."""

    blocks: _Blocks
    buf: bytearray  # what was read past the tag
    header: bytes  # the worksheet's XML up to and including ``<sheetData>``, without its dimension
    prefix: bytes  # the namespace prefix of the sheet's elements (``x:``), or empty
    empty: bool  # ``<sheetData/>``: not even a header row


def _open_sheet(archive: zipfile.ZipFile, sheet: Sheet, block: int) -> tuple[IO[bytes], _OpenSheet]:
    try:
        stream = deflate.inflating(archive.open(sheet.part))
    except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
        raise XlsxFormatError(f"the xlsx file is damaged ({sheet.part}: {exc})") from exc
    try:
        reader = _Blocks(stream, sheet.part, block)
        buf = bytearray()
        while (match := _SHEET_DATA_OPEN.search(buf)) is None:
            if len(buf) > xlsx_guard.MAX_PROLOG_BYTES:
                raise XlsxFormatError(
                    f"the worksheet {sheet.name!r} has no sheetData element in its first "
                    f"{xlsx_guard.MAX_PROLOG_BYTES >> 20} MiB"
                )
            data = reader.read()
            if not data:
                raise XlsxFormatError(f"the worksheet {sheet.name!r} has no sheetData element")
            buf += data
        try:
            xlsx_guard.refuse_dtd(bytes(buf[: match.start()]), sheet.part)
        except xlsx_guard.UnsafeWorkbook as exc:
            raise XlsxFormatError(str(exc)) from exc
    except BaseException:
        stream.close()
        raise
    prefix = match.group(1) + b":" if match.group(1) else b""
    header = _DIMENSION.sub(b"", bytes(buf[: match.start()])) + b"<" + prefix + b"sheetData>"
    empty = match.group(2) == b"/"
    del buf[: match.end()]
    return stream, _OpenSheet(reader, buf, header, prefix, empty)


def _split_sheet(
    archive: zipfile.ZipFile,
    layout: _Layout,
    sheet: Sheet,
    ordinal: int,
    metadata: dict[str, bytes],
    tmp: Path,
    rows_per_part: int,
    block: int,
    merged: list[str] | None = None,
) -> Iterator[Path]:
    """Write the sheet as stand-alone parts of about ``rows_per_part`` rows and yield their paths.

    The header is the sheet's ``ordinal``-th row with a value; rows above it are left out. Yields
    at least one part if the sheet has a header row, so a sheet with column names and no rows
    still reports its columns.
    """
    stream, opened = _open_sheet(archive, sheet, block)
    with stream:
        if opened.empty:
            return
        reader, buf, header, prefix = opened.blocks, opened.buf, opened.header, opened.prefix
        footer = b"</" + prefix + b"sheetData></" + prefix + b"worksheet>"
        row_end = b"</" + prefix + b"row>"
        data_end = b"</" + prefix + b"sheetData>"

        header_row = b""
        part: _Part | None = None
        count = 0
        last_row: int | None = None  # sheet row number of the previous part's last row
        try:
            while True:
                data = reader.read()
                buf += data
                last = buf.rfind(row_end)
                if last >= 0:
                    last += len(row_end)
                    complete = bytes(buf[:last])
                    del buf[:last]  # O(1) for a bytearray: it moves its start, not its bytes
                    if not header_row:
                        header_row, complete, ordinal = _take_header_row(complete, ordinal)
                    if header_row and complete:
                        if part is None:
                            part = _Part(tmp / f"part-{count}.xlsx", layout, sheet, metadata, header, footer)
                            part.write(_place_header(header_row, last_row))
                        part.write(_errors_as_text(complete))
                        part.rows += complete.count(row_end)
                        last_row = _last_row_number(complete, prefix) or last_row
                # What follows the rows is not needed but for the merged ranges, which come first:
                # reading stops there rather than inflate whatever a file puts after its data.
                finished = not data or data_end in buf
                if not finished and len(buf) > xlsx_guard.MAX_ROW_BYTES:
                    after = f"sheet row {last_row}" if last_row else "the header"
                    raise XlsxFormatError(
                        f"the row after {after} is larger than {xlsx_guard.MAX_ROW_BYTES >> 20} MiB of XML "
                        "(far more than a spreadsheet row holds)"
                    )
                if part is not None and (part.rows >= rows_per_part or finished):
                    yield part.finish()
                    part, count = None, count + 1
                if finished:
                    if data_end not in buf:
                        # What follows the last complete row must close the sheet data: anything else
                        # is a cut-off or damaged sheet, never silently shortened.
                        raise XlsxFormatError(
                            f"the worksheet {sheet.name!r} is damaged: its XML ends in the middle of the data"
                        )
                    if merged is not None:
                        merged.extend(_merged_ranges(buf, reader, prefix))
                    if header_row and count == 0:
                        empty = _Part(tmp / "part-0.xlsx", layout, sheet, metadata, header, footer)
                        empty.write(header_row)
                        yield empty.finish()
                    return
        except BaseException:
            # A refused or damaged sheet, or a consumer that stopped early: close the open part's
            # zip too, instead of leaving a half-written archive to the garbage collector.
            if part is not None:
                part.abort()
            raise


_MERGED_RANGE = re.compile(rb'<(?:\w+:)?mergeCell\b[^>]*?\bref="([A-Z]+[0-9]+(?::[A-Z]+[0-9]+)?)"')


def _merged_ranges(buf: bytearray, reader: _Blocks, prefix: bytes) -> list[str]:
    """The merged ranges listed after the sheet data (``buf`` holds its end), read no further than
    their list's end, the worksheet's, or MAX_ROW_BYTES."""
    tail = bytes(buf[buf.find(b"</" + prefix + b"sheetData>") :])
    ends = (b"</" + prefix + b"mergeCells>", b"</" + prefix + b"worksheet>")
    while not any(end in tail for end in ends) and len(tail) <= xlsx_guard.MAX_ROW_BYTES:
        data = reader.read()
        if not data:
            break
        tail += data
    return [m.decode() for m in _MERGED_RANGE.findall(tail)]


class _Part:
    """One stand-alone workbook: the original's metadata parts and a slice of the sheet."""

    def __init__(
        self, path: Path, layout: _Layout, sheet: Sheet, metadata: dict[str, bytes], header: bytes, footer: bytes
    ):
        self.path = path
        self.rows = 0
        self._footer = footer
        # Stored, not deflated: the part lives for one read; compressing it would only cost time.
        self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        for name, data in metadata.items():
            self._zip.writestr(name, data)
        for other in layout.sheets:
            if other.part != sheet.part:
                self._zip.writestr(other.part, _EMPTY_SHEET)
        self._sheet = self._zip.open(sheet.part, "w", force_zip64=True)
        self._sheet.write(header)

    def write(self, data: bytes) -> None:
        self._sheet.write(data)

    def finish(self) -> Path:
        self._sheet.write(self._footer)
        self._sheet.close()
        self._zip.close()
        return self.path

    def abort(self) -> None:
        """Close without completing; the temporary folder that holds the file is removed anyway."""
        try:
            self._sheet.close()
        finally:
            self._zip.close()


def _take_header_row(chunk: bytes, ordinal: int) -> tuple[bytes, bytes, int]:
    """Split off the ``ordinal``-th row that holds a value (rows above it are dropped).

    Returns (header row, the rows after it, ordinal left): the header is b"" when the chunk ends
    before it, and the search goes on in the next chunk with the ordinal left.
    """
    pos = 0
    for end in _ROW_END.finditer(chunk):
        row = chunk[pos : end.end()]
        pos = end.end()
        if _HAS_VALUE.search(row):
            if ordinal == 0:
                return row, chunk[pos:], 0
            ordinal -= 1
    return b"", b"", ordinal


def _errors_as_text(rows: bytes) -> bytes:
    """Error cells (``#N/A``, ``#DIV/0!``) as the text they show: calamine reads them as missing,
    and an upload's ``#N/A`` must come back (as text: the result holds no formulas) and be quoted
    in a rejection, not reported as a missing value."""
    if b't="e"' not in rows:
        return rows
    return _ERROR_CELL.sub(lambda m: m.group(1) + b't="str"', rows)


def _place_header(header_row: bytes, previous_last_row: int | None) -> bytes:
    """Number a later part's copy of the header row as the previous part's last row.

    calamine builds a dense grid from the smallest to the largest row number it sees: the header
    must not stay at row 1 above a part that starts at row 500,001, and it must sit right after
    the previous part's rows, so blank rows between two parts still count (row numbers in error
    reports stay those of the sheet). Rows without numbers are numbered by position: unchanged.
    """
    own = _ROW_NUMBER.search(header_row)
    if previous_last_row is None or own is None or int(own.group(2)) == previous_last_row:
        return header_row
    number = str(previous_last_row).encode()
    out = _ROW_NUMBER.sub(lambda m: m.group(1) + number + b'"', header_row, count=1)
    return _CELL_REF.sub(lambda m: m.group(1) + m.group(2) + number + b'"', out)


def _last_row_number(chunk: bytes, prefix: bytes) -> int | None:
    # One search backwards from the end, which stops at the last row's tag: a second one for a tag
    # that never occurs (``<row>`` without attributes, in most files) scanned the whole chunk, 0.3 s
    # of CPU per million rows.
    tag = b"<" + prefix + b"row"
    start = chunk.rfind(tag)
    while start >= 0 and chunk[start + len(tag) : start + len(tag) + 1] not in (b" ", b">", b"\t", b"\r", b"\n"):
        start = chunk.rfind(tag, 0, start)  # a longer name (``<rowX``): not a row
    match = _ROW_NUMBER.match(chunk, start) if start >= 0 else None
    return int(match.group(2)) if match else None


def load_part(loader: xlsx_cells.PartLoader, part: Path) -> pa.RecordBatch:
    """A part (from ``_split_sheet``) as a batch; the part's file is deleted. Runs in a parser process."""
    try:
        return loader.load(part)
    except Exception as exc:  # fastexcel raises its own hierarchy; all of it means "cannot read"
        raise XlsxFormatError(f"the worksheet {loader.sheet!r} cannot be read: {exc}") from exc
    finally:
        part.unlink(missing_ok=True)


class _Blocks:
    def __init__(self, stream: IO[bytes], name: str, size: int):
        self._stream = stream
        self._name = name
        self._size = size

    def read(self) -> bytes:
        try:
            return self._stream.read(self._size)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise XlsxFormatError(f"the xlsx file is damaged ({self._name}: {exc})") from exc


_DIMENSION_REF = re.compile(rb'<(?:\w+:)?dimension\b[^>]*?\sref="[A-Z]*\d+(?::[A-Z]*(\d+))?"')
_DIMENSION_SCAN_BYTES = 64 << 10


def declared_data_rows(path: Path, sheet_name: str | None = None, header_row: int = 1) -> int | None:
    """Data rows below the header as the sheet's ``<dimension>`` declares them, read from the
    first bytes of the sheet (the first sheet if ``sheet_name`` is None); None when the sheet
    declares none. Only an estimate for progress
    (a writer may omit the element or count trailing blank rows): the reader never trusts it."""
    try:
        with zipfile.ZipFile(path) as archive:
            layout = _layout(archive)
            with archive.open(layout.sheet(sheet_name).part) as sheet:
                head = sheet.read(_DIMENSION_SCAN_BYTES)
    except (XlsxFormatError, zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, KeyError, RuntimeError):
        return None
    match = _DIMENSION_REF.search(head)
    if match is None or match.group(1) is None:
        return None
    return max(int(match.group(1)) - header_row, 0)
