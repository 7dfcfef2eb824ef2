"""The one feature schema: the fields of a listing, their vocabularies and their valid ranges.

Everything that reads or validates a listing (the generator, training, the API, the batch job) takes
its field list from here, so a new category or field is added in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MODEL_GROUPS: tuple[str, ...] = ("A", "B", "C")
TARGET = "price_in_local_currency"
GROUP_FIELD = "model_group"


@dataclass(frozen=True)
class CategoricalField:
    name: str
    values: tuple[str | int, ...]
    description: str


@dataclass(frozen=True)
class NumericField:
    name: str
    minimum: int
    maximum: int
    description: str


CATEGORICAL: tuple[CategoricalField, ...] = (
    CategoricalField("model", (120, 140, 160, 180, 200, 220, 250, 300), "engine model code"),
    CategoricalField("fuel_type", ("Petrol", "Diesel", "Hybrid", "Electric", "LPG"), "fuel type"),
    CategoricalField("gear_type", ("Manual", "Automatic", "Semi-Automatic"), "gearbox"),
    CategoricalField(
        "vehicle_type",
        ("Sedan Car", "Hatchback", "Station Wagon", "SUV", "Coupe", "Convertible", "MPV"),
        "body type",
    ),
    CategoricalField(
        "color",
        ("Black", "White", "Silver", "Grey", "Blue", "Red", "Green", "Brown", "Beige", "Yellow"),
        "exterior colour",
    ),
    CategoricalField("line", ("Base", "Comfort", "Elegance", "Sportline", "Premium"), "trim line"),
    CategoricalField("doors", ("2 to 3", "4 to 5"), "door band"),
    CategoricalField("seats", ("1 to 3", "4 to 5", "6 to 7", "8 or more"), "seat band"),
    CategoricalField(
        "climate",
        ("None", "Air Conditioning", "Automatic Climate Control", "Dual-Zone Climate Control"),
        "climate option",
    ),
)

NUMERIC: tuple[NumericField, ...] = (
    NumericField("kilometers", 0, 2_000_000, "odometer reading in km"),
    NumericField("age_in_months", 0, 600, "age of the car in months"),
)

# Column order of the sample files (and of every file we write back).
INPUT_COLUMNS: tuple[str, ...] = (
    "model_group",
    "model",
    "kilometers",
    "fuel_type",
    "gear_type",
    "vehicle_type",
    "age_in_months",
    "color",
    "line",
    "doors",
    "seats",
    "climate",
)
FEATURE_FIELDS: tuple[str, ...] = tuple(c for c in INPUT_COLUMNS if c != GROUP_FIELD)

CATEGORICAL_BY_NAME = {f.name: f for f in CATEGORICAL}
NUMERIC_BY_NAME = {f.name: f for f in NUMERIC}


def allowed_note(values: Iterable[Any]) -> str:
    """The values a field accepts, as a person reads them after its error message (a batch's
    rejected-row reasons, the CLI's lines from the API's ``allowed``)."""
    return f" (allowed: {', '.join(str(v) for v in values)})"
