"""The documented examples are the original demo's sample rows, verbatim."""

from __future__ import annotations

from typing import Any

import pandas as pd

from aimq_serving.api.payloads import SAMPLE_ROWS
from tests.conftest import SAMPLES


def test_examples_are_the_first_rows_of_the_sample_files(sample_records: list[dict[str, Any]]) -> None:
    assert SAMPLE_ROWS == sample_records[: len(SAMPLE_ROWS)]
    one_row = pd.read_excel(SAMPLES / "1_row.xlsx").to_dict("records")
    assert [{k: (int(v) if isinstance(v, int) else v) for k, v in one_row[0].items()}] == SAMPLE_ROWS[:1]
