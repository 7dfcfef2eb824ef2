"""A corpus of bad (and awkward) batch-scoring uploads, each with the outcome it must get.

Every file is generated into a directory on demand (nothing binary is committed; the zip bombs are
~1 MiB on disk and inflate to 1 GiB). An outcome is one of:

- ``Refused(status, detail)``: ``POST /upload`` answers ``status`` and the JSON ``detail`` contains
  ``detail``; nothing is stored or queued;
- ``Failed(reason)``: accepted, then the upload ends ``failed`` with ``reason`` in its ``error``;
- ``Scored(rows_total, rejected)``: accepted and ``succeeded``; exactly the sheet rows in
  ``rejected`` are rejected, each with its reason substring(s).

docs/batch.md ("Bad input") lists the same table for people.
"""

from __future__ import annotations

import base64
import functools
import io
import random
import string
import struct
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import fastexcel
import xlsxwriter

from aimq_serving import schema
from tests.helpers.paths import SAMPLES

MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
BOMB_BYTES = 1 << 30  # what a zip bomb inflates to


# --- outcomes --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Refused:
    status: int
    detail: str


@dataclass(frozen=True)
class Failed:
    reason: str


@dataclass(frozen=True)
class Scored:
    rows_total: int
    rejected: dict[int, tuple[str, ...]] = field(default_factory=dict)


Outcome = Refused | Failed | Scored


@dataclass(frozen=True)
class Case:
    id: str
    name: str  # the client's file name
    build: Callable[[], bytes]
    outcome: Outcome
    max_rows: int = 1_000_000

    def write(self, directory: Path) -> Path:
        path = directory / f"{self.id}{Path(self.name).suffix}"
        path.write_bytes(self.build())
        return path


# --- building blocks -------------------------------------------------------------------------
@functools.cache
def _sample() -> tuple[tuple[Any, ...], ...]:
    frame = fastexcel.read_excel(str(SAMPLES / "100_rows.xlsx")).load_sheet(0).to_pandas()
    return tuple(tuple(_plain(v) for v in row) for row in frame[list(schema.INPUT_COLUMNS)].itertuples(index=False))


def sample_rows() -> list[list[Any]]:
    """The 100 rows of the sample file (valid for every trained model), as lists in column order."""
    return [list(row) for row in _sample()]


def _plain(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def good_row(i: int = 0) -> list[Any]:
    return list(sample_rows()[i])


def with_cell(row: list[Any], column: str, value: Any) -> list[Any]:
    out = list(row)
    out[schema.INPUT_COLUMNS.index(column)] = value
    return out


def xlsx_via_xlsxwriter(
    header: Sequence[str], rows: Sequence[Sequence[Any]], setup: Callable[[Any, Any], None] | None = None
) -> bytes:
    buf = io.BytesIO()
    book = xlsxwriter.Workbook(buf, {"in_memory": True})
    sheet = book.add_worksheet()
    sheet.write_row(0, 0, header)
    for r, row in enumerate(rows, start=1):
        for c, value in enumerate(row):
            if value is not None:
                sheet.write(r, c, value)
    if setup is not None:
        setup(book, sheet)
    book.close()
    return buf.getvalue()


@dataclass(frozen=True)
class Raw:
    """A cell written as given; ``{ref}`` becomes the cell reference."""

    xml: str


def sheet_xml(rows: Sequence[Sequence[Any]], *, prolog: str = "", before: str = "", after: str = "") -> bytes:
    """A worksheet with inline strings and numbers; ``prolog`` goes before the root element,
    ``before``/``after`` inside it around ``sheetData``."""
    out = [
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>{prolog}'
        f'<worksheet xmlns="{MAIN_NS}">{before}<sheetData>'
    ]
    for r, row in enumerate(rows, start=1):
        cells = []
        for c, value in enumerate(row):
            ref = f"{string.ascii_uppercase[c]}{r}"
            if isinstance(value, Raw):
                cells.append(value.xml.replace("{ref}", ref))
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                cells.append(f'<c r="{ref}"><v>{value}</v></c>')
            elif value is not None:
                cells.append(f'<c r="{ref}" t="inlineStr"><is><t>{escape(str(value))}</t></is></c>')
        out.append(f'<row r="{r}">{"".join(cells)}</row>')
    out.append(f"</sheetData>{after}</worksheet>")
    return "".join(out).encode()


_CONTENT_TYPES = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    b'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    b'<Default Extension="xml" ContentType="application/xml"/>'
    b'<Override PartName="/xl/workbook.xml" '
    b'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    b'<Override PartName="/xl/worksheets/sheet1.xml" '
    b'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    b"</Types>"
)
_ROOT_RELS = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    b'<Relationship Id="rId1" '
    b'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    b'Target="xl/workbook.xml"/>'
    b"</Relationships>"
)
_WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>{prolog}'
    f'<workbook xmlns="{MAIN_NS}" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    "<sheets>{sheets}</sheets></workbook>"
)
_SHEET_ENTRY = '<sheet name="Sheet1" sheetId="1" r:id="rId1"/>'
_WORKBOOK_RELS = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    b'<Relationship Id="rId1" '
    b'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" '
    b'Target="worksheets/sheet1.xml"/>'
    b"</Relationships>"
)


def raw_xlsx_members(sheet: bytes, *, workbook_prolog: str = "", sheets: str = _SHEET_ENTRY) -> dict[str, bytes]:
    return {
        "[Content_Types].xml": _CONTENT_TYPES,
        "_rels/.rels": _ROOT_RELS,
        "xl/workbook.xml": _WORKBOOK.format(prolog=workbook_prolog, sheets=sheets).encode(),
        "xl/_rels/workbook.xml.rels": _WORKBOOK_RELS,
        "xl/worksheets/sheet1.xml": sheet,
    }


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def raw_xlsx(sheet: bytes, **kwargs: Any) -> bytes:
    return zip_bytes(raw_xlsx_members(sheet, **kwargs))


# --- zip bombs: a deflate stream that repeats one flushed block --------------------------------
@dataclass(frozen=True)
class Deflated:
    data: bytes
    crc: int
    size: int


def deflate_repeated(prefix: bytes, chunk: bytes, count: int, suffix: bytes) -> Deflated:
    """``prefix + chunk * count + suffix`` deflated without compressing ``count`` chunks: after a
    full flush the compressor starts afresh, so each copy of ``chunk`` deflates to the same bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    one = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.compress(suffix) + compressor.flush()
    crc = zlib.crc32(prefix)
    for _ in range(count):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(suffix, crc)
    return Deflated(head + one * count + tail, crc, len(prefix) + len(chunk) * count + len(suffix))


def zip_with_deflated(
    members: dict[str, bytes], name: str, member: Deflated, declared_size: int | None = None
) -> bytes:
    """A zip of ``members`` plus ``name`` holding the pre-deflated ``member``, written by hand
    (zipfile cannot take compressed bytes); ``declared_size`` lets the directory lie."""
    size = member.size if declared_size is None else declared_size
    out = io.BytesIO(zip_bytes(members))
    with zipfile.ZipFile(out) as archive:
        infos = archive.infolist()
        offset = archive.start_dir
    out.seek(offset)
    out.truncate()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, member.crc, len(member.data), size, len(name), 0)
    out.write(local + name.encode() + member.data)
    directory = b"".join(
        _central(i.filename.encode(), i.compress_type, i.CRC, i.compress_size, i.file_size, i.header_offset)
        for i in infos
    )
    directory += _central(name.encode(), 8, member.crc, len(member.data), size, offset)
    start = out.tell()
    out.write(directory)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(infos) + 1, len(infos) + 1, len(directory), start, 0))
    return out.getvalue()


def _central(name: bytes, method: int, crc: int, csize: int, size: int, offset: int) -> bytes:
    return (
        struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            20,
            20,
            0,
            method,
            0,
            0,
            crc,
            csize,
            size,
            len(name),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        + name
    )


def header_only_sheet() -> bytes:
    return sheet_xml([list(schema.INPUT_COLUMNS)])


def shared_strings_bomb(declared_size: int | None = None) -> bytes:
    bomb = deflate_repeated(
        f'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="{MAIN_NS}">'.encode(),
        b" " * (1 << 20),
        BOMB_BYTES >> 20,
        b"</sst>",
    )
    return zip_with_deflated(raw_xlsx_members(header_only_sheet()), "xl/sharedStrings.xml", bomb, declared_size)


def sheet_bomb() -> bytes:
    members = raw_xlsx_members(b"")
    del members["xl/worksheets/sheet1.xml"]
    bomb = deflate_repeated(
        f'<?xml version="1.0"?><worksheet xmlns="{MAIN_NS}">'.encode(),
        b" " * (1 << 20),
        BOMB_BYTES >> 20,
        b"<sheetData/></worksheet>",
    )
    return zip_with_deflated(members, "xl/worksheets/sheet1.xml", bomb)


BILLION_LAUGHS = (
    '<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
    + "]>"
)


def entity_bomb_shared_strings() -> bytes:
    members = raw_xlsx_members(sheet_xml([list(schema.INPUT_COLUMNS), [Raw('<c r="{ref}" t="s"><v>0</v></c>')]]))
    members["xl/sharedStrings.xml"] = (
        f'<?xml version="1.0"?>{BILLION_LAUGHS}'
        f'<sst xmlns="{MAIN_NS}" count="1" uniqueCount="1"><si><t>&lol9;</t></si></sst>'
    ).encode()
    return zip_bytes(members)


def entity_bomb_sheet() -> bytes:
    rows = [
        list(schema.INPUT_COLUMNS),
        with_cell(good_row(), "color", Raw('<c r="{ref}" t="inlineStr"><is><t>&lol9;</t></is></c>')),
    ]
    return raw_xlsx(sheet_xml(rows, prolog=BILLION_LAUGHS))


def encrypted_xlsx() -> bytes:
    from msoffcrypto.format.ooxml import OOXMLFile

    out = io.BytesIO()
    with open(SAMPLES / "100_rows.xlsx", "rb") as fh:
        OOXMLFile(fh).encrypt("secret", out)
    return out.getvalue()


def zip_entries_encrypted() -> bytes:
    """A workbook whose zip entries carry the 'encrypted' flag (a password-protected zip)."""
    data = bytearray((SAMPLES / "1_row.xlsx").read_bytes())
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        data[pos + 8] |= 0x01
        pos = data.find(b"PK\x01\x02", pos + 4)
    return bytes(data)


def random_text(n: int, seed: int = 0) -> str:
    """Text that does not compress much (so no zip-bomb check is involved) and needs no escaping."""
    return base64.b64encode(random.Random(seed).randbytes(n))[:n].decode()


def csv_bytes(
    rows: Sequence[Sequence[Any]], delimiter: str = ",", newline: str = "\n", encoding: str = "utf-8"
) -> bytes:
    lines = [delimiter.join(_csv_cell(v, delimiter) for v in row) for row in rows]
    return (newline.join(lines) + newline).encode(encoding)


def _csv_cell(value: Any, delimiter: str) -> str:
    text = "" if value is None else str(value)
    if any(ch in text for ch in (delimiter, '"', "\n", "\r")):
        text = '"' + text.replace('"', '""') + '"'
    return text


HEADER = list(schema.INPUT_COLUMNS)


def _rows(n: int) -> list[list[Any]]:
    return [list(r) for r in sample_rows()[:n]]


# --- the cases -------------------------------------------------------------------------------
def _wrong_types() -> bytes:
    import datetime as dt

    def setup(book: Any, sheet: Any) -> None:
        date = book.add_format({"num_format": "yyyy-mm-dd"})
        sheet.write_boolean(2, HEADER.index("kilometers"), True)  # row 3
        sheet.write_datetime(3, HEADER.index("age_in_months"), dt.datetime(2024, 1, 31), date)  # row 4
        sheet.write_number(4, HEADER.index("fuel_type"), 5)  # row 5
        sheet.write_string(5, HEADER.index("model"), "V8")  # row 6
        sheet.write_number(6, HEADER.index("kilometers"), 1.5)  # row 7
        sheet.write_number(7, HEADER.index("model_group"), 1)  # row 8

    rows = _rows(8)
    for r, column in (
        (1, "kilometers"),
        (2, "age_in_months"),
        (3, "fuel_type"),
        (4, "model"),
        (5, "kilometers"),
        (6, "model_group"),
    ):
        rows[r] = with_cell(rows[r], column, None)
    return xlsx_via_xlsxwriter(HEADER, rows, setup)


def _date_column() -> bytes:
    """Every age a date: calamine makes it a date column, which must not pass as nanoseconds."""
    import datetime as dt

    def setup(book: Any, sheet: Any) -> None:
        date = book.add_format({"num_format": "yyyy-mm-dd"})
        for r in (1, 2):
            sheet.write_datetime(r, HEADER.index("age_in_months"), dt.datetime(2024, r, 1), date)

    return xlsx_via_xlsxwriter(HEADER, [with_cell(r, "age_in_months", None) for r in _rows(2)], setup)


def _formulas() -> bytes:
    """Cached values (what Excel saves) are used; a formula saved without one reads as empty."""
    km = HEADER.index("kilometers")
    rows: list[list[Any]] = [HEADER, *_rows(4)]
    rows[1][km] = Raw(f'<c r="{{ref}}"><f>40000+{rows[1][km] - 40000}</f><v>{rows[1][km]}</v></c>')
    rows[2][0] = Raw(f'<c r="{{ref}}" t="str"><f>"{rows[2][0]}"</f><v>{rows[2][0]}</v></c>')
    rows[3][km] = Raw('<c r="{ref}"><f>1+1</f></c>')  # row 4: no cached value
    rows[4][km] = Raw('<c r="{ref}" t="e"><f>1/0</f><v>#DIV/0!</v></c>')  # row 5: an error value
    return raw_xlsx(sheet_xml(rows))


def _merged_cells() -> bytes:
    def setup(book: Any, sheet: Any) -> None:
        sheet.merge_range(1, 0, 4, 0, rows[0][0])  # model_group of rows 2-5 merged into one cell

    rows = [r for r in _rows(4) if r[0] == _rows(1)[0][0]][:1] * 4
    return xlsx_via_xlsxwriter(
        HEADER, [with_cell(r, "model_group", None) if i else r for i, r in enumerate(rows)], setup
    )


def _huge_strings_xlsx() -> bytes:
    rows: list[list[Any]] = [[*HEADER, "notes"], *[[*r, "fine"] for r in _rows(4)]]
    rows[2][-1] = random_text(40_000)  # row 3: longer than a cell holds (xlsxwriter would refuse)
    rows[3][HEADER.index("color")] = random_text(100_000, seed=1)  # row 4
    return raw_xlsx(sheet_xml(rows))


def _huge_row_xlsx() -> bytes:
    rows: list[list[Any]] = [[*HEADER, "notes"], *[[*r, "x"] for r in _rows(3)]]
    # Sheet row 4: 17 MiB, more than the two 8 MiB reads of the sheet that reach into it (the
    # reader holds at most the limit plus one read) and the test's limit of 1 MiB.
    rows[3][-1] = random_text(17 << 20)
    return raw_xlsx(sheet_xml(rows))


def _blank_lines_csv() -> bytes:
    rows = _rows(4)
    rows[3] = with_cell(rows[3], "fuel_type", "Steam")
    text = csv_bytes([HEADER, *rows[:2]]) + b"\n\n" + csv_bytes(rows[2:])
    return text  # the Steam row is line 7 of the file


def _late_latin1() -> bytes:
    rows = _rows(100) * 15
    rows.append(with_cell(rows[0], "color", "Bl\u00e9u"))
    return csv_bytes([HEADER, *rows], encoding="latin-1")  # the é is past the 64 KiB the API sniffs


def _cr_only() -> bytes:
    return csv_bytes([HEADER, *_rows(3)], newline="\r")


def _renamed_and_extra_columns() -> bytes:
    header = [f"  {c.upper()} " for c in HEADER] + ["note", "note"]  # an extra column, twice
    return xlsx_via_xlsxwriter(header, [[*r, f"L{i}", "dup"] for i, r in enumerate(_rows(5))])


def _a_feature_twice() -> bytes:
    header = [*HEADER, "listing_id", " Model"]  # a second 'model' (column N): which one is meant?
    return xlsx_via_xlsxwriter(header, [[*r, f"L{i}", 140] for i, r in enumerate(_rows(5))])


def _unknown_categories() -> bytes:
    rows = _rows(5)
    rows[1] = with_cell(rows[1], "fuel_type", "Steam")  # row 3
    rows[3] = with_cell(with_cell(rows[3], "color", "Plaid"), "model_group", "Z")  # row 5
    return xlsx_via_xlsxwriter(HEADER, rows)


def _protected_sheet() -> bytes:
    return xlsx_via_xlsxwriter(HEADER, _rows(3), lambda book, sheet: sheet.protect("secret"))


def _no_worksheet() -> bytes:
    members = raw_xlsx_members(header_only_sheet(), sheets="")
    return zip_bytes(members)


def _damaged_sheet() -> bytes:
    sheet = sheet_xml([HEADER, *_rows(20)])
    return raw_xlsx(sheet[: len(sheet) // 2])


def _lzma_entries() -> bytes:
    return zip_bytes(raw_xlsx_members(sheet_xml([HEADER, *_rows(2)])), compression=zipfile.ZIP_LZMA)


def _png() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def _utf16_no_bom() -> bytes:
    return csv_bytes([HEADER, *_rows(2)], encoding="utf-16-le")


def _prose() -> bytes:
    return b"Dear team\nplease find the listings attached\nregards\n"


CASES: tuple[Case, ...] = (
    # -- refused at upload (the API reads the bytes and the zip directory, nothing more) --
    Case("png-named-xlsx", "listings.xlsx", _png, Refused(415, "PNG image")),
    Case("utf16-without-bom", "listings.csv", _utf16_no_bom, Refused(415, "UTF-16")),
    Case(
        "truncated-xlsx",
        "listings.xlsx",
        lambda: (SAMPLES / "100_rows.xlsx").read_bytes()[:5000],
        Refused(422, "zip structure is damaged"),
    ),
    Case("encrypted-xlsx", "listings.xlsx", encrypted_xlsx, Refused(415, "encrypted with a password")),
    Case("zip-entries-encrypted", "listings.xlsx", zip_entries_encrypted, Refused(415, "zip entries are encrypted")),
    Case("zip-bomb-shared-strings", "bomb.xlsx", shared_strings_bomb, Refused(422, "refused as a zip bomb")),
    Case("zip-bomb-sheet", "bomb.xlsx", sheet_bomb, Refused(422, "refused as a zip bomb")),
    Case("lzma-compressed-entries", "listings.xlsx", _lzma_entries, Refused(422, "compression method 14")),
    # -- accepted, then the run fails with the reason --
    Case(
        "zip-bomb-lying-sizes",
        "bomb.xlsx",
        lambda: shared_strings_bomb(declared_size=1 << 20),
        Failed("damaged (xl/sharedStrings.xml: Bad CRC-32"),
    ),
    Case(
        "entity-bomb-shared-strings",
        "laughs.xlsx",
        entity_bomb_shared_strings,
        Failed("xl/sharedStrings.xml declares an XML document type"),
    ),
    Case(
        "entity-bomb-sheet",
        "laughs.xlsx",
        entity_bomb_sheet,
        Failed("xl/worksheets/sheet1.xml declares an XML document type"),
    ),
    Case(
        "entity-bomb-workbook",
        "laughs.xlsx",
        lambda: raw_xlsx(header_only_sheet(), workbook_prolog=BILLION_LAUGHS),
        Failed("xl/workbook.xml declares an XML document type"),
    ),
    Case("prose-named-csv", "listings.csv", _prose, Failed("the header line has no column separator")),
    Case(
        "damaged-sheet-xml", "listings.xlsx", _damaged_sheet, Failed("damaged: its XML ends in the middle of the data")
    ),
    Case("workbook-without-sheets", "listings.xlsx", _no_worksheet, Failed("the workbook has no readable worksheet")),
    Case(
        "empty-workbook",
        "listings.xlsx",
        lambda: xlsx_via_xlsxwriter([], []),
        Failed("the file is empty: no header row"),
    ),
    Case(
        "missing-columns",
        "listings.xlsx",
        lambda: xlsx_via_xlsxwriter(HEADER[:2], [r[:2] for r in _rows(3)]),
        Failed("missing column(s): kilometers, fuel_type"),
    ),
    Case(
        "more-rows-than-the-maximum",
        "listings.xlsx",
        lambda: (SAMPLES / "100_rows.xlsx").read_bytes(),
        Failed("more than 50 data rows (the limit per upload)"),
        max_rows=50,
    ),
    Case(
        "row-larger-than-the-limit",
        "listings.xlsx",
        _huge_row_xlsx,
        Failed("the row after sheet row 3 is larger than 1 MiB"),
    ),
    Case(
        "csv-pipe-delimited",
        "listings.csv",
        lambda: csv_bytes([HEADER, *_rows(2)], delimiter="|"),
        Failed("no column separator"),
    ),
    Case(
        "csv-ragged-row",
        "listings.csv",
        lambda: csv_bytes([HEADER, *_rows(2)]) + b"A,180\n" + csv_bytes(_rows(1)),
        Failed("row 4 has 2 fields where the header has 12"),
    ),
    Case(
        "csv-latin1-after-the-sniffed-head",
        "listings.csv",
        _late_latin1,
        Failed("line 1502 has a byte that is not UTF-8"),
    ),
    Case(
        "csv-line-longer-than-a-block",
        "listings.csv",
        lambda: csv_bytes([HEADER, *_rows(1), with_cell(_rows(2)[1], "color", random_text(3 << 20))]),
        Failed("row 3 is longer than"),
    ),
    # -- scored; these rows rejected with these reasons --
    Case("header-only-xlsx", "listings.xlsx", lambda: xlsx_via_xlsxwriter(HEADER, []), Scored(0)),
    Case("header-only-csv-without-line-break", "listings.csv", lambda: ",".join(HEADER).encode(), Scored(0)),
    Case("renamed-and-repeated-extra-columns", "listings.xlsx", _renamed_and_extra_columns, Scored(5)),
    Case("a-feature-twice", "listings.xlsx", _a_feature_twice, Failed("model is in columns B and N; keep one")),
    Case("sheet-protection-without-encryption", "listings.xlsx", _protected_sheet, Scored(3)),
    Case(
        "wrong-types",
        "listings.xlsx",
        _wrong_types,
        Scored(
            8,
            {
                # Cells quoted as typed, by kind, as /predict/onnx quotes them: a boolean cell TRUE,
                # a number cell 5 (also in a column that holds text), a text cell 'V8'.
                3: ("kilometers: TRUE is not a number",),
                4: ("age_in_months: '2024-01-31 00:00:00' is not a number",),
                5: ("fuel_type: unknown value 5 (allowed: ",),
                6: ("model: unknown value 'V8' (allowed: ",),
                7: ("kilometers: 1.5 must be a whole number",),
                8: ("model_group: unknown value 1 (allowed: A, B, C)",),
            },
        ),
    ),
    Case(
        "date-column-in-a-number-field",
        "listings.xlsx",
        _date_column,
        Scored(
            2,
            {
                2: ("age_in_months: '2024-01-01 00:00:00' is not a number",),
                3: ("age_in_months: '2024-02-01 00:00:00' is not a number",),
            },
        ),
    ),
    Case(
        "unknown-categories",
        "listings.xlsx",
        _unknown_categories,
        Scored(
            5,
            {
                3: ("fuel_type: unknown value 'Steam' (allowed: ",),
                5: ("model_group: unknown value 'Z' (allowed: A, B, C)",),
            },
        ),
    ),
    Case(
        "formulas",
        "listings.xlsx",
        _formulas,
        Scored(
            4,
            {
                4: ("kilometers: value is missing",),
                5: ("kilometers: '#DIV/0!' is not a number",),  # an error value is quoted as the sheet shows it
            },
        ),
    ),
    Case(
        "merged-cells",
        "listings.xlsx",
        _merged_cells,
        Scored(
            4,
            {
                3: ("model_group: value is missing",),
                4: ("model_group: value is missing",),
                5: ("model_group: value is missing",),
            },
        ),
    ),
    Case(
        "huge-strings",
        "listings.xlsx",
        _huge_strings_xlsx,
        Scored(
            4,
            {
                3: ("notes: text of 40,000 characters; a cell holds at most 32,767",),
                4: ("color: text of 100,000 characters", "color: unknown value '", "…"),
            },
        ),
    ),
    Case(
        "csv-semicolon-bom-crlf",
        "listings.csv",
        lambda: b"\xef\xbb\xbf" + csv_bytes([HEADER, *_rows(3)], delimiter=";", newline="\r\n"),
        Scored(3),
    ),
    Case("csv-tab-delimited", "listings.csv", lambda: csv_bytes([HEADER, *_rows(3)], delimiter="\t"), Scored(3)),
    Case("csv-old-mac-line-ends", "listings.csv", _cr_only, Scored(3)),
    Case(
        "csv-blank-lines-keep-row-numbers",
        "listings.csv",
        _blank_lines_csv,
        Scored(4, {7: ("fuel_type: unknown value 'Steam'",)}),
    ),
    Case(
        "csv-nul-in-a-cell-past-the-sniffed-head",
        "listings.csv",
        lambda: csv_bytes([HEADER, *_rows(100) * 15]) + csv_bytes([with_cell(_rows(3)[2], "kilometers", "5\x0000")]),
        Scored(1501, {1502: ("kilometers: '5\\x0000' is not a number",)}),
    ),
    Case(
        "csv-nul-in-the-head",
        "listings.csv",
        lambda: csv_bytes([HEADER, with_cell(_rows(1)[0], "kilometers", "5\x0000")]),
        Refused(415, "binary file"),
    ),
)

BY_ID = {case.id: case for case in CASES}
assert len(BY_ID) == len(CASES)
