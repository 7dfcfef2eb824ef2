"""The generated data set: deterministic, covers the sample files, and prices follow real effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aimq_pipelines.models.synthetic import generate_listings
from aimq_serving import schema
from aimq_serving.features import FeatureSpec
from tests.helpers.paths import SAMPLES


def test_same_seed_same_data_other_seed_other_data() -> None:
    a = generate_listings("A", 2_000, seed=1)
    pd.testing.assert_frame_equal(a, generate_listings("A", 2_000, seed=1))
    assert not a.equals(generate_listings("A", 2_000, seed=2))


@pytest.mark.parametrize("group", schema.MODEL_GROUPS)
def test_rows_match_the_schema_and_cover_the_samples(group: str) -> None:
    frame = generate_listings(group, 20_000)
    assert list(frame.columns) == [*schema.INPUT_COLUMNS, schema.TARGET]
    _, valid, errors = FeatureSpec.from_schema().encode_frame(frame)
    assert valid.all() and not errors
    samples = pd.read_excel(SAMPLES / "100_rows.xlsx", keep_default_na=False)
    for column in schema.FEATURE_FIELDS:
        if column in schema.CATEGORICAL_BY_NAME:
            wanted = set(samples.loc[samples.model_group == group, column])
            assert wanted <= set(frame[column]), column
    for field in schema.CATEGORICAL:
        if field.name != "model":  # engines differ by group on purpose
            assert frame[field.name].nunique() >= min(len(field.values), 2)


def test_prices_follow_plausible_effects() -> None:
    frame = generate_listings("B", 50_000)
    price = frame[schema.TARGET]
    young, old = price[frame.age_in_months < 24].median(), price[frame.age_in_months > 96].median()
    assert young > 1.5 * old
    assert price[frame.gear_type == "Automatic"].median() > price[frame.gear_type == "Manual"].median()
    assert price[frame.line == "Premium"].median() > price[frame.line == "Base"].median()
    assert np.corrcoef(frame.kilometers, price)[0, 1] < -0.3
    assert (price > 0).all()


def test_groups_are_priced_differently() -> None:
    medians = [generate_listings(g, 10_000)[schema.TARGET].median() for g in schema.MODEL_GROUPS]
    assert medians == sorted(medians)
