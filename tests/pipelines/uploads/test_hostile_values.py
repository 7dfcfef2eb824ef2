"""Hostile values in the features, through an xlsx, a CSV and the JSON API alike. For every row:
the file never fails because of a value; a bad row is rejected with a reason naming the field, the
value as typed and the sheet's row; batch and online agree (both price it, at the same price, or
both refuse it in the same words). A fixed corpus, and generated cases (hypothesis, fixed seed)."""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aimq_pipelines.uploads.scoring import PinnedModels
from aimq_serving.loaded_models import ModelCache
from aimq_serving.model_store import ModelStore
from tests.helpers.hostile_values import Case, ExcelError, check_agreement, hostile_cases

# The findings and what the generated cases found: every feature's hostile kinds. Each
# entry is one file, a row per case (the other cells as in the 1-row sample), so that a value can
# share its column with cells of other kinds, as it does in a real sheet.
CORPUS: list[list[Case]] = [
    [("model", 1e20)],
    [("kilometers", -0.0)],
    # A first generated run saw a row of 0.0 km neither priced nor rejected; not seen again since
    # the validation reads a mixed column's numbers as numbers: kept, in a column of mixed kinds.
    [("kilometers", 0.0), ("kilometers", "n/a")],
    [("kilometers", 1e308)],
    [("kilometers", math.inf)],
    [("age_in_months", 0.5)],
    [("age_in_months", 2.0**70)],
    [("kilometers", "1180591620717411303424")],
    [("model", " 180 ")],
    [("kilometers", "1_000")],
    [("kilometers", "nan")],
    [("fuel_type", "diesel")],
    [("fuel_type", " Diesel ")],
    [("color", "\x00\x7f\x1b")],
    [("kilometers", True)],
    [("model", ExcelError("#DIV/0!"))],
    [("fuel_type", ExcelError("#N/A"))],
    [("kilometers", dt.datetime(2024, 1, 31))],
    [("age_in_months", dt.time(5, 6, 7))],
    [("seats", dt.timedelta(days=2, hours=5))],
    [("color", "x" * 40_000)],
    # A number in a text column (a column of mixed kinds) is quoted as the number, as online: 0, not '0'.
    [("fuel_type", 0), ("climate", 2.5)],
    # ...and a boolean as TRUE, not 'TRUE'.
    [("kilometers", True), ("age_in_months", False), ("kilometers", "n/a")],
    # A number's text in a mixed column is calamine's rounding (-2e-193 shows as -0): judged by the number.
    [("kilometers", -2e-193), ("kilometers", "n/a")],
    # calamine panicked reading a column as dates where a number is beyond any date, in a part with
    # date, time or duration cells: the file failed; now only the rows are rejected.
    [("kilometers", -2.333458854653391e16), ("kilometers", dt.timedelta(days=400, seconds=26))],
    [("line", -1.379653851648899e242), ("model", dt.datetime(2707, 5, 20, 1, 26, 27))],
    [("color", -2300894695779.2163), ("seats", dt.time(18, 48, 2))],
]


@pytest.fixture(scope="module")
def pinned(trained_store: ModelStore) -> PinnedModels:
    return PinnedModels.from_cache(ModelCache(trained_store))


@pytest.mark.parametrize("cases", CORPUS, ids=[",".join(f"{f}={v!r:.20}" for f, v in c) for c in CORPUS])
def test_corpus(tmp_path: Path, pinned: PinnedModels, api_client: TestClient, cases: list[Case]) -> None:
    check_agreement(tmp_path, cases, pinned, api_client)


# Bounded for CI: a fixed seed (derandomize), 50 examples, each one file of up to 25 generated rows
# (about 15 s here on an idle machine); each row's outcome is checked on its own.
@settings(
    derandomize=True,
    database=None,
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases=st.lists(hostile_cases, min_size=1, max_size=25))
def test_generated(tmp_path: Path, pinned: PinnedModels, api_client: TestClient, cases: list[Case]) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as work:  # tmp_path is shared by the examples
        check_agreement(Path(work), cases, pinned, api_client)
