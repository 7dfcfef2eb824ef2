"""What a value means for a feature, and why it is refused: one judgement for the API and the batch job.

A spreadsheet has no integers (every number is a double), a CSV has no types at all, and JSON has
both; so a value is judged by what it says, not by how it was stored: ``1000``, ``1000.0``,
``"1000"`` and ``" 1000 "`` are all the whole number 1000, ``-0.0`` is 0, and ``1e20``, ``inf``,
``0.5``, ``TRUE`` or ``"n/a"`` are refused with a reason that quotes the value as it was given.
The API normalises a refused record with ``normalise`` and validates it again (its strict parse
stays the fast path of a good record); the batch job validates whole columns at once
(``FeatureSpec.encode_frame``) by the same rules. Both word their refusals with ``reason``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from aimq_serving import schema

# A number written as text: what pandas' to_numeric reads, without inf, nan and Python's extras
# (``1_000``, non-ASCII digits), which no spreadsheet writes for a number.
_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII)
# Past 2**53 a double no longer holds every whole number: such a value is shown as the double it is.
_EXACT = 2**53
# Whole numbers below this are shown without a fraction or exponent, as a spreadsheet shows them.
_SHOWN_AS_INTEGER = 1e15

_WHOLE_NUMBER_FIELDS = frozenset(
    {*schema.NUMERIC_BY_NAME, *(f.name for f in schema.CATEGORICAL if isinstance(f.values[0], int))}
)


def as_number(value: Any) -> float | int | None:
    """``value`` as a number if it is one: a number (never a boolean), or text that is one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        return float(value)
    return None


def whole(value: Any) -> int | None:
    """``value`` as a whole number if it is one that a double holds exactly."""
    number = as_number(value)
    if number is None or (isinstance(number, float) and not (math.isfinite(number) and number.is_integer())):
        return None
    return int(number) if abs(number) <= _EXACT else None


def normalise(field: str, value: Any) -> Any:
    """``value`` as the API's strict schema takes it, where it means a valid value: whole numbers as
    ints, category text without surrounding spaces. Anything else comes back as it was, and the
    schema refuses it."""
    if field in _WHOLE_NUMBER_FIELDS:
        if type(value) is int:
            return value
        number = whole(value)
        return value if number is None else number
    if isinstance(value, str):
        return value.strip()
    return value


def is_missing(value: Any) -> bool:
    """An empty cell: none, empty or blank text, or the NaN pandas reads an empty cell as."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and not value.strip()


def shown(value: Any) -> str:
    """``value`` as the user gave it: text quoted, numbers as a spreadsheet shows them."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < _SHOWN_AS_INTEGER:
            return str(int(value))
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return repr(value if isinstance(value, str) else str(value))


def reason(field: str, value: Any, bounds: tuple[float, float] | None = None) -> str:
    """Why ``value`` is not accepted for ``field`` (a category outside its vocabulary, or a number
    outside ``bounds`` or not whole; ``bounds`` given for the numeric fields)."""
    if is_missing(value):
        return "value is missing"
    if bounds is None:
        return f"unknown value {shown(value)}"
    lo, hi = bounds
    if as_number(value) is None:
        return f"{shown(value)} is not a number"
    return f"{shown(value)} must be a whole number in [{lo:.0f}, {hi:.0f}]"
