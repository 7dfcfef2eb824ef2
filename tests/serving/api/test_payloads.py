"""The documented examples are the original demo's sample rows, verbatim, and valid records."""

from __future__ import annotations

import pandas as pd
import pytest

from aimq_serving.api.payloads import SAMPLE_ROWS
from aimq_serving.features import FeatureSpec
from tests.helpers.paths import REFERENCE_SAMPLES


def test_examples_are_valid_records() -> None:
    _, valid, errors = FeatureSpec.from_schema().encode_frame(pd.DataFrame(SAMPLE_ROWS))
    assert valid.all() and not errors


@pytest.mark.skipif(
    not (REFERENCE_SAMPLES / "100_rows.xlsx").exists(),
    reason=f"the original demo's reference files are not laid at {REFERENCE_SAMPLES}",
)
def test_examples_are_the_first_rows_of_the_reference_files() -> None:
    hundred = pd.read_excel(REFERENCE_SAMPLES / "100_rows.xlsx", keep_default_na=False).to_dict("records")
    one_row = pd.read_excel(REFERENCE_SAMPLES / "1_row.xlsx", keep_default_na=False).to_dict("records")
    assert SAMPLE_ROWS == hundred[: len(SAMPLE_ROWS)]
    assert one_row[:1] == SAMPLE_ROWS[:1]
