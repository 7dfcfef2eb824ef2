"""The drift profile: counted alike from encoded and raw cells, stored signed with its version, bounded."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest
import redis
from sklearn.dummy import DummyRegressor

from aimq_pipelines.models.synthetic import generate_listings
from aimq_pipelines.models.training import spec_from_data
from aimq_serving import drift_profile
from aimq_serving.drift_profile import DriftProfile, ProfileTooLarge
from aimq_serving.model_store import ModelStore, TamperedModel


@pytest.fixture(scope="module")
def fitted() -> tuple[DriftProfile, pd.DataFrame]:
    frame = generate_listings("B", 3000, seed=5)
    spec = spec_from_data(frame)
    features, valid, _ = spec.encode_frame(frame)
    assert valid.all()
    importance = {c: (2.0 if c == "age_in_months" else 1.0) / (len(spec.columns) + 1) for c in spec.columns}
    predicted = frame["price_in_local_currency"].to_numpy() * 0.98
    profile = DriftProfile.fit(
        spec, features, importance, {"method": "given"}, predicted, frame["price_in_local_currency"].to_numpy()
    )
    return profile, frame


def test_cells_hold_the_training_rows(fitted: tuple[DriftProfile, pd.DataFrame]) -> None:
    profile, frame = fitted
    assert profile.rows == 3000
    for feature in profile.features:
        assert sum(feature.shares) == pytest.approx(1.0)
        assert len(feature.shares) == len(feature.cells)
    age = profile.feature("age_in_months")
    assert age.cells[:2] == ("missing", "below min") and age.cells[-1] == "above max"
    assert (age.shares[0], age.shares[1], age.shares[-1]) == (0.0, 0.0, 0.0)
    assert age.minimum == frame["age_in_months"].min() and age.maximum == frame["age_in_months"].max()
    assert max(age.shares) < 0.2  # deciles (ties may merge two)
    fuel = profile.feature("fuel_type")
    assert fuel.cells[-2:] == ("unseen", "missing") and fuel.shares[-2:] == (0.0, 0.0)
    assert profile.residuals["mean"] > 0 and len(profile.predictions["quantiles"]) == 41


def test_raw_and_encoded_cells_agree_and_raw_ones_say_what_is_new(fitted: tuple[DriftProfile, pd.DataFrame]) -> None:
    profile, frame = fitted
    spec = spec_from_data(frame)
    sample = frame.head(200)
    matrix, _, _ = spec.encode_frame(sample)
    for j, name in enumerate(spec.columns):
        feature = profile.feature(name)
        assert list(feature.count_encoded(matrix[:, j])) == list(feature.count_raw(sample[name]))
    odd = pd.Series(["Petrol", "Hydrogen", None, "  ", " Diesel "], dtype=object)
    assert list(profile.feature("fuel_type").count_raw(odd)) == [1, 1, 0, 0, 0, 1, 2]
    km = profile.feature("kilometers")
    counts = km.count_raw(pd.Series([None, "n/a", -5, km.maximum + 1, km.minimum, km.maximum], dtype=object))
    assert (counts[0], counts[1], counts[2], counts[-2], counts[-1]) == (2, 1, 1, 1, 1)


def test_json_round_trip_and_size_bound(fitted: tuple[DriftProfile, pd.DataFrame], monkeypatch) -> None:
    profile, _ = fitted
    raw = profile.to_json()
    assert len(raw) < 20_000
    again = DriftProfile.from_json(raw)
    assert again.to_json() == raw
    monkeypatch.setattr(drift_profile, "MAX_PROFILE_BYTES", len(raw) - 1)
    with pytest.raises(ProfileTooLarge, match="at most"):
        profile.to_json()


def test_stored_signed_and_a_changed_profile_is_never_used(
    fitted: tuple[DriftProfile, pd.DataFrame], redis_client: redis.Redis
) -> None:
    profile, frame = fitted
    spec = spec_from_data(frame)
    store = ModelStore(redis_client, f"aimqtest-profile-{uuid.uuid4().hex[:8]}", b"k" * 32)
    try:
        model = DummyRegressor().fit(np.zeros((2, 11)), [1.0, 2.0])
        with_profile = store.put("B", b"onnx", model, spec, {}, {}, profile=profile, use_redisai=False)
        without = store.put("B", b"onnx", model, spec, {}, {}, use_redisai=False)
        store.promote("B", with_profile)
        assert store.get("B", with_profile).profile.to_json() == profile.to_json()  # type: ignore[union-attr]
        assert store.get("B", without).profile is None  # stored before profiles: still served
        body = profile.to_json().replace(b'"rows":3000', b'"rows":3001')
        store.client.hset(f"{store.prefix}:models:B:v:{with_profile}", "profile", body)
        with pytest.raises(TamperedModel, match="changed after signing: profile"):
            store.get("B", with_profile)
    finally:
        store.clear()
