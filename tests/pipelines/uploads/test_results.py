"""CSV results change no harmless cell (issue 25): only cells a spreadsheet would evaluate as a
formula get a leading ``'``; checked through the API and by opening the result in LibreOffice."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

import pyarrow as pa
import pytest

from aimq_pipelines.uploads.results import neutralise_formulas
from aimq_serving import schema
from tests.helpers.corpus import good_row
from tests.helpers.scored_uploads import needs_soffice, result_file, soffice_convert

# The two lists, and more of each kind.
HARMLESS = ["-", "--", "+", "-5", "1-2", "- note", "+3.5", "-1e3", "-.5", "-1,000", "-10%", "@", "\tfoo", "note-"]
FORMULAS = [
    "=1+1",
    "+SUM(A1)",
    "-2+3",
    "@cmd",
    "-A1",
    "--1",
    "- =1+1",
    "\t=1+1",
    "-cmd|' /C calc'!A0",
    '=HYPERLINK("x")',
]
CELLS = HARMLESS + FORMULAS

_ODF = {
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
}


def test_only_formulas_are_neutralised() -> None:
    out = neutralise_formulas(pa.table({"note": CELLS})).column("note").to_pylist()
    assert out == HARMLESS + [f"'{c}" for c in FORMULAS]


def _csv_upload(tmp_path: Path) -> Path:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["note", *schema.INPUT_COLUMNS])
    writer.writerows([cell, *good_row(i)] for i, cell in enumerate(CELLS))
    path = tmp_path / "listings.csv"
    path.write_text(out.getvalue())
    return path


def test_the_csv_result_keeps_harmless_cells(scored_upload: Callable[[Path], dict], tmp_path: Path) -> None:
    status = scored_upload(_csv_upload(tmp_path))
    notes = [r["note"] for r in csv.DictReader(io.StringIO(result_file(status, tmp_path, ".csv").read_text()))]
    assert notes == HARMLESS + [f"'{c}" for c in FORMULAS]
    assert status["rows_rejected"] == 0


@needs_soffice
@pytest.mark.slow
def test_libreoffice_evaluates_no_cell_of_the_csv_result(scored_upload: Callable[[Path], dict], tmp_path: Path) -> None:
    """LibreOffice opens the result with its CSV defaults and saves it as flat ODF, which shows each
    cell's formula (if any), kind and text."""
    status = scored_upload(_csv_upload(tmp_path))
    opened = soffice_convert(result_file(status, tmp_path, ".csv"), tmp_path / "lo", "fods")
    rows = ElementTree.parse(opened).getroot().findall(".//table:table-row", _ODF)
    first_cells = [row.find("table:table-cell", _ODF) for row in rows[1 : len(CELLS) + 1]]
    assert not [c for c in first_cells if c.get(f"{{{_ODF['table']}}}formula") is not None]
    kinds = [c.get(f"{{{_ODF['office']}}}value-type") for c in first_cells]
    texts = ["".join(c.itertext()).strip() for c in first_cells]
    for cell, kind, text in zip(HARMLESS, kinds, texts):
        if kind == "float":  # read as a number: the value the cell says
            assert float(cell.replace(",", "")) == float(text.replace(",", "")), cell
        else:  # read as text: the cell as uploaded (but for a tab, an element of its own in ODF)
            assert (kind, text) == ("string", cell.replace("\t", "")), cell
    for cell, kind, text in zip(FORMULAS, kinds[len(HARMLESS) :], texts[len(HARMLESS) :]):
        # shown as the text it is, never run (flat ODF writes a tab as an element: not in the text)
        assert (kind, text) == ("string", "'" + cell.replace("\t", "")), cell
