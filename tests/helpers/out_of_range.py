"""Records beyond the training data (issue 25's out_of_range), built from a stored version's reference."""

from __future__ import annotations

from typing import Any

from aimq_serving import schema
from aimq_serving.model_store import ModelStore


def beyond_training(store: ModelStore, records: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[str]]]:
    """Per record (one of each group's first), four variants with the fields they should flag: as
    given, kilometers above its group's training maximum, age_in_months above it, and both."""
    out = []
    for group in schema.MODEL_GROUPS:
        record = next(r for r in records if r[schema.GROUP_FIELD] == group)
        reference = store.get(group).reference
        assert reference is not None
        km_high = int(reference.numeric["kilometers"][1])
        age_high = int(reference.numeric["age_in_months"][1])
        as_given = {n for n, (lo, hi) in reference.numeric.items() if not lo <= record[n] <= hi}
        out += [
            (record, _ordered(as_given)),
            ({**record, "kilometers": km_high + 100}, _ordered({*as_given, "kilometers"})),
            ({**record, "age_in_months": age_high + 1}, _ordered({*as_given, "age_in_months"})),
            ({**record, "kilometers": km_high + 1, "age_in_months": age_high + 1}, ["kilometers", "age_in_months"]),
        ]
    return out


def _ordered(names: set[str]) -> list[str]:
    return sorted(names, key=schema.INPUT_COLUMNS.index)
