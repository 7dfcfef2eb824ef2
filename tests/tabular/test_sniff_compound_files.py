"""Compound files (OLE2) at upload: what they are (an encrypted workbook, a legacy .xls, .doc or .ppt),
read from the top of their directory with olefile; damaged or hostile ones get the general answer, in
bounded time and memory, never another error."""

from __future__ import annotations

import random
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from aimq_tabular.sniff import HEAD_BYTES, UnsupportedType, identify
from tests.helpers import compound_files

GENERAL = "this is a legacy Excel .xls (or another Office 97-2003) file; save it as .xlsx or CSV and upload again"
ENCRYPTED = "this workbook is encrypted with a password"
LEGACY_XLS = "this is a legacy Excel .xls workbook (Office 97-2003)"
LEGACY_DOC = "this is a Word .doc document (Office 97-2003)"
LEGACY_PPT = "this is a PowerPoint .ppt presentation (Office 97-2003)"


def refusal(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    with pytest.raises(UnsupportedType) as refused:
        identify(path, data[:HEAD_BYTES])
    return str(refused.value)


@pytest.mark.parametrize(
    ("names", "answer"),
    [
        ({}, ENCRYPTED),
        ({"EncryptedPackage": "Workbook", "EncryptionInfo": "SummaryInformation"}, LEGACY_XLS),
        ({"EncryptedPackage": "Book", "EncryptionInfo": "SummaryInformation"}, LEGACY_XLS),
        ({"EncryptedPackage": "WordDocument", "EncryptionInfo": "1Table"}, LEGACY_DOC),
        ({"EncryptedPackage": "PowerPoint Document", "EncryptionInfo": "Current User"}, LEGACY_PPT),
        # Only the top of the directory says what the file is: a document embedding a workbook is a document.
        (
            {"EncryptedPackage": "WordDocument", "EncryptionInfo": "1Table", "StrongEncryptionDataSpace": "Workbook"},
            LEGACY_DOC,
        ),
        # One of the two streams of an encrypted package is not an encrypted workbook.
        ({"EncryptionInfo": "Contents"}, GENERAL),
    ],
    ids=["encrypted-xlsx", "xls", "xls-biff5", "doc", "ppt", "doc-embedding-a-workbook", "unknown"],
)
def test_what_a_compound_file_is_comes_from_its_directory(tmp_path: Path, names: dict[str, str], answer: str) -> None:
    assert refusal(tmp_path, compound_files.renamed(names)).startswith(answer)


def test_a_cut_off_compound_file_gets_an_answer(tmp_path: Path) -> None:
    data = compound_files.encrypted()
    ends = sorted({*range(8, len(data), compound_files.SECTOR), *range(9, len(data), 1000), 511, 513})
    answers = {end: refusal(tmp_path, data[:end]) for end in ends}
    assert {a for a in answers.values() if not a.startswith(ENCRYPTED)} == {GENERAL}
    # The directory is in the first sectors: a file cut off after them still says what it is.
    assert answers[ends[-1]].startswith(ENCRYPTED) and answers[8] == GENERAL


def test_damaged_headers_fats_and_directories_get_an_answer(tmp_path: Path) -> None:
    data = compound_files.encrypted()
    damaged_region = 6 * compound_files.SECTOR  # header, FAT and directory sectors of this file
    rng = random.Random(16)
    answers: dict[str, int] = {}
    for _ in range(300):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(8, damaged_region - 4)  # past the signature: what is sniffed stays OLE2
            value = rng.choice([0, 1, 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFA, rng.getrandbits(32), rng.randrange(64)])
            struct.pack_into("<I", damaged, at, value)
        answer = refusal(tmp_path, bytes(damaged))
        kind = next(k for k in (GENERAL, ENCRYPTED, LEGACY_XLS, LEGACY_DOC, LEGACY_PPT) if answer.startswith(k))
        answers[kind] = answers.get(kind, 0) + 1
    # Some damage leaves the directory readable, some does not.
    assert answers[GENERAL] > 0 and answers[ENCRYPTED] > 0, answers


HOSTILE: dict[str, Callable[[], bytes]] = {
    # Each of them keeps a reader that trusts the file going for minutes, or for gigabytes.
    "difat-loop": compound_files.difat_loop,
    "difat-loop-growing-the-fat": lambda: compound_files.difat_loop(compound_files.fat_sector()),
    "directory-loop-in-8-mb": compound_files.directory_loop,
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("build", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_structures_get_the_general_answer_in_bounded_time_and_memory(
    tmp_path: Path, build: Callable[[], bytes]
) -> None:
    data = build()
    tracemalloc.start()
    try:
        answer = refusal(tmp_path, data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert answer == GENERAL
    assert peak < 4 << 20, f"{peak:,} bytes allocated while reading it"
