"""The drift tests' arithmetic: p-values valid at any row count, weighted Benjamini-Hochberg."""

from __future__ import annotations

import numpy as np
import pytest

from aimq_pipelines.monitoring.statistics import feature_p_value, importance_weights, weighted_bh_level

SHARES = np.array([0.0, 0.0, *[0.1] * 10, 0.0])  # missing, below, ten deciles, above


@pytest.mark.parametrize("n", [1, 10, 50, 1000, 1_000_000])
def test_a_sample_of_the_reference_is_not_significant_at_any_row_count(n: int) -> None:
    rng = np.random.default_rng(n)
    p = [feature_p_value(rng.multinomial(n, SHARES), SHARES, 0.01) for _ in range(50)]
    assert min(p) > 0.01  # fixed seeds; benchmarks/drift_benchmark.py measures the rate


def test_a_difference_within_the_margin_is_never_drift_however_many_rows() -> None:
    shifted = SHARES.copy()
    shifted[2], shifted[11] = 0.095, 0.105  # half a percentage point moved: within the 1 % margin
    assert feature_p_value(np.round(shifted * 10_000_000), SHARES, 0.01) == 1.0
    assert feature_p_value(np.round(shifted * 10_000_000), SHARES, 0.001) < 1e-6


def test_unseen_values_beyond_the_margin_are_significant() -> None:
    counts = np.round(SHARES * 180).astype(int)
    counts[-1] = 20  # 10 % of 200 rows in a cell the training data never had
    assert feature_p_value(counts, SHARES, 0.01) < 1e-10
    counts[-1] = 1  # one such row of 181: no evidence of more than the margin
    assert feature_p_value(counts, SHARES, 0.01) == 1.0


def test_weights_average_one_and_follow_importance() -> None:
    w = importance_weights(np.array([0.7, 0.2, 0.1, 0.0]), 0.5)
    assert w.mean() == pytest.approx(1.0)
    assert list(w) == sorted(w, reverse=True) and w[-1] == pytest.approx(0.5)
    assert importance_weights(np.zeros(3), 0.5) == pytest.approx(np.ones(3))
    assert importance_weights(np.array([0.9, 0.1]), 0.0) == pytest.approx(np.ones(2))


def test_weighted_bh_level() -> None:
    ones = np.ones(4)
    assert weighted_bh_level(np.array([0.5, 0.6, 0.7, 0.9]), ones, 0.01) == pytest.approx(0.0025)
    # two pass the step-up: the level rises to 2 alpha / m
    assert weighted_bh_level(np.array([0.001, 0.004, 0.7, 0.9]), ones, 0.01) == pytest.approx(0.005)
    # an important feature (weight 2) passes with a p-value an unimportant one would not
    weights = np.array([2.0, 0.5, 0.75, 0.75])
    level = weighted_bh_level(np.array([0.004, 0.004, 0.5, 0.5]), weights, 0.01)
    assert 0.004 <= weights[0] * level and 0.004 > weights[1] * level
