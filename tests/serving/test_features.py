"""Feature encoding: one spec, the same numbers for a record and for a table."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from aimq_serving import schema
from aimq_serving.features import EncodingError, FeatureSpec, _category_codes
from tests.helpers.paths import SAMPLES

SPEC = FeatureSpec.from_schema()


def test_schema_vocabularies_cover_the_sample_files() -> None:
    frame = pd.read_excel(SAMPLES / "100_rows.xlsx", keep_default_na=False)
    assert list(frame.columns) == list(schema.INPUT_COLUMNS)
    _, valid, errors = SPEC.encode_frame(frame)
    assert errors == [] and valid.all()


def test_record_and_frame_encodings_agree() -> None:
    frame = pd.read_excel(SAMPLES / "100_rows.xlsx", keep_default_na=False)
    matrix, _, _ = SPEC.encode_frame(frame)
    records = frame.to_dict("records")
    np.testing.assert_array_equal(matrix, SPEC.encode_records(records))


def test_spec_round_trips_through_json_with_a_stable_version() -> None:
    again = FeatureSpec.from_json(SPEC.to_json())
    assert again == SPEC and again.version == SPEC.version
    narrower = FeatureSpec(SPEC.columns, {**SPEC.categorical, "color": ("Black",)}, SPEC.numeric)
    assert narrower.version != SPEC.version


def test_bad_cells_are_reported_with_row_field_and_allowed_values() -> None:
    frame = pd.read_excel(SAMPLES / "100_rows.xlsx", keep_default_na=False).astype(object)
    frame.loc[3, "color"] = "Pink"
    frame.loc[5, "kilometers"] = -4
    frame.loc[6, "model"] = "abc"
    frame.loc[7, "age_in_months"] = None
    frame.loc[8, "kilometers"] = 12.5
    matrix, valid, errors = SPEC.encode_frame(frame)
    assert len(matrix) == 95 and list(np.flatnonzero(~valid)) == [3, 5, 6, 7, 8]
    by_row = {e.row: e for e in errors}
    assert by_row[3].field == "color" and "Pink" in by_row[3].message and "Black" in by_row[3].allowed
    assert by_row[5].field == "kilometers" and "whole number in [0, 2000000]" in by_row[5].message
    assert by_row[6].field == "model" and 180 in by_row[6].allowed
    assert by_row[7].message == "value is missing"
    assert by_row[8].field == "kilometers"


def test_missing_column_is_reported() -> None:
    frame = pd.read_excel(SAMPLES / "1_row.xlsx", keep_default_na=False).drop(columns=["climate"])
    with pytest.raises(EncodingError, match="climate: column is missing"):
        SPEC.encode_frame(frame)


def test_numbers_written_as_text_are_accepted() -> None:
    frame = pd.read_excel(SAMPLES / "1_row.xlsx", keep_default_na=False).astype(str)
    matrix, valid, errors = SPEC.encode_frame(frame)
    assert valid.all() and errors == []
    np.testing.assert_array_equal(
        matrix, SPEC.encode_frame(pd.read_excel(SAMPLES / "1_row.xlsx", keep_default_na=False))[0]
    )


def test_encode_record_rejects_unknown_values_with_allowed_list() -> None:
    record = pd.read_excel(SAMPLES / "1_row.xlsx", keep_default_na=False).iloc[0].to_dict()
    record["fuel_type"] = "Steam"
    with pytest.raises(EncodingError) as info:
        SPEC.encode_record(record)
    assert info.value.errors[0].field == "fuel_type"
    assert info.value.errors[0].allowed == SPEC.categorical["fuel_type"]


def test_category_codes_are_the_vocabularys_positions_from_threads_sharing_its_index() -> None:
    """A category's code is its position in the vocabulary (-1: not in it), as pandas' Categorical
    computes it, whatever the cell: text with spaces around, other case, numbers, booleans, missing.
    Scoring threads share one index per vocabulary: many threads at once get the same codes."""
    vocab = [f"colour {i}" for i in range(40)] + ["Électrique", "0"]
    cells = [" colour 3 ", "colour 39", "Colour 3", "", None, pd.NA, float("nan"), 0, True]
    cells += ["\u00a0Électrique\u2003", "x"]
    series = pd.Series(cells * 500, dtype=object)
    expected = np.array([3, 39, -1, -1, -1, -1, -1, 41, -1, 40, -1] * 500)
    results: list[np.ndarray] = []

    def encode() -> None:
        for _ in range(20):
            results.append(_category_codes(series, vocab))

    threads = [threading.Thread(target=encode) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 80 and all((codes == expected).all() for codes in results)

    engine = [180, 200, 250]  # an integer vocabulary: numbers compared as doubles, text read as numbers
    numbers = pd.Series([180, "180", 180.0, " 200 ", "250.0", None, 1e20, float("inf"), "x", True], dtype=object)
    assert _category_codes(numbers, engine).tolist() == [0, 0, 0, 1, 2, -1, -1, -1, -1, -1]
