"""Rejected rows whose missing value is a merged cell: the reason names the merged range.

Only the first (top-left) cell of a merged range holds its value; the others are empty in the file,
though a person sees the value across the whole range. Spreading that value over the range would be
a guess about what the user meant (a merged "Diesel" over five rows may be a heading, not data), so
the rows stay rejected, and their reason says why the cell is empty and what to do. The sheet lists
its merged ranges after its rows, so the reasons are completed when the file has been read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import pyarrow as pa

from aimq_pipelines.uploads.results import ERRORS, ROW

_CELL = re.compile(r"([A-Z]+)([0-9]+)")


def explain(tables: list[pa.Table], ranges: list[str], letters: Mapping[str, str | None]) -> list[pa.Table]:
    """``tables`` of rejected rows (``row``: the sheet's row number) with "value is missing" of a
    cell inside one of ``ranges``, but its first, explained; ``letters``: each field's column."""
    spans = [_span(ref) for ref in ranges]
    columns = {field: _column_number(letter) for field, letter in letters.items() if letter is not None}
    if not spans or not columns:
        return tables
    out = []
    for table in tables:
        rows, errors = table.column(ROW).to_pylist(), table.column(ERRORS).to_pylist()
        changed = False
        for i, (row, text) in enumerate(zip(rows, errors)):
            for field, column in columns.items():
                missing = f"{field}: value is missing"
                if missing not in text:
                    continue
                ref = next((r for r, s in zip(ranges, spans) if _inside(s, column, row)), None)
                if ref is not None:
                    first = ref.split(":")[0]
                    text = text.replace(
                        missing,
                        f"{missing}: the cell is in the merged range {ref}, whose value only its first cell "
                        f"{first} holds; unmerge the range and fill in each cell",
                    )
                    errors[i], changed = text, True
        if changed:
            table = table.set_column(table.schema.get_field_index(ERRORS), ERRORS, pa.array(errors, pa.string()))
        out.append(table)
    return out


def _column_number(letters: str) -> int:
    number = 0
    for letter in letters:
        number = number * 26 + ord(letter) - 64
    return number


def _span(ref: str) -> tuple[int, int, int, int]:
    """(first column, first row, last column, last row) of ``C5:D9`` (or of one cell)."""
    cells = [_CELL.fullmatch(part) for part in ref.split(":")]
    (c1, r1), (c2, r2) = [(_column_number(m.group(1)), int(m.group(2))) for m in (cells[0], cells[-1]) if m]
    return min(c1, c2), min(r1, r2), max(c1, c2), max(r1, r2)


def _inside(span: tuple[int, int, int, int], column: int, row: int) -> bool:
    """Inside the range, and not its first cell (which holds the value)."""
    c1, r1, c2, r2 = span
    return c1 <= column <= c2 and r1 <= row <= r2 and (column, row) != (c1, r1)
