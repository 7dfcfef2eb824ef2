"""The training rows' numeric ranges (issue 25's out_of_range): taken at training over the fitted rows,
one record and a whole matrix flagged alike, stored and read back unchanged."""

from __future__ import annotations

import numpy as np

from aimq_pipelines.models.synthetic import generate_listings
from aimq_pipelines.models.training import spec_from_data, train
from aimq_serving import schema
from aimq_serving.reference import Reference

COLUMNS = schema.FEATURE_FIELDS
NUMERIC = [f.name for f in schema.NUMERIC]


def test_training_takes_the_ranges_of_the_rows_it_fits() -> None:
    frame = generate_listings("A", 2_000, seed=5)
    trained = train(frame, spec_from_data(frame), max_iter=5)
    reference = trained.reference
    assert reference.rows == trained.metrics["train_rows"]
    assert list(reference.numeric) == NUMERIC
    for name, (lo, hi) in reference.numeric.items():
        # the fitted rows are a subset of the frame: their range lies within the frame's
        assert frame[name].min() <= lo < hi <= frame[name].max()


def test_one_record_and_a_matrix_are_flagged_alike_on_both_ends() -> None:
    reference = Reference({"kilometers": (1_000.0, 500_000.0), "age_in_months": (2.0, 240.0)}, rows=100)
    flags = reference.flags(COLUMNS)
    km, age = COLUMNS.index("kilometers"), COLUMNS.index("age_in_months")
    cases = [
        ((1_000, 2), None),  # both bounds are inside
        ((500_000, 240), None),
        ((999, 100), "kilometers"),
        ((500_001, 100), "kilometers"),
        ((10_000, 1), "age_in_months"),
        ((10_000, 241), "age_in_months"),
        ((0, 600), "kilometers, age_in_months"),
    ]
    matrix = np.zeros((len(cases), len(COLUMNS)), dtype=np.float32)
    for i, ((k, a), _) in enumerate(cases):
        matrix[i, km], matrix[i, age] = k, a
    assert flags(matrix).tolist() == [cell for _, cell in cases]
    for (k, a), cell in cases:
        assert ", ".join(reference.outside({"kilometers": k, "age_in_months": a})) == (cell or "")


def test_the_reference_reads_back_as_stored() -> None:
    reference = Reference({"kilometers": (0.0, 912_300.0), "age_in_months": (0.0, 299.0)}, rows=3_500)
    assert Reference.from_json(reference.to_json()) == reference
