"""The tests behind a drift verdict: per feature a p-value valid at any row count, then one
importance-weighted Benjamini-Hochberg step over every feature of the file (docs/monitoring.md).

Per feature, each cell (a bin, a category, unseen, missing, below/above the training range) is
tested on its own: is the upload's share of the cell more than ``margin`` above (or below) its
training share? The tail of a binomial count is bounded by Chernoff's bound
``P(X >= k) <= exp(-n KL(k/n || q))`` (and the same below), which holds at every n from 1 row to
millions, needs no normal approximation (a chi-squared test's false alarms grow at small n) and no
scipy (whose import alone is ~0.3 s of a one-row run). The feature's p-value is the smallest cell's,
times twice the number of cells (Bonferroni over its one-sided tests). The ``margin`` makes the null
"the upload's cells are within ``margin`` of the training data's": differences too small to matter
are never drift, however many rows show them (Evidently's p-values flag any difference on a large
file); unseen categories, missing cells and values outside the training range, whose training
share is ~0, count as drift once their share exceeds ``margin`` with significance.
"""

from __future__ import annotations

import numpy as np


def _kl(share: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(Bernoulli(share) || Bernoulli(q)), q in (0, 1)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(share > 0, share * np.log(share / q), 0.0)
        b = np.where(share < 1, (1 - share) * np.log((1 - share) / (1 - q)), 0.0)
    return a + b


def feature_p_value(counts: np.ndarray, reference: np.ndarray, margin: float) -> float:
    """The p-value of "every cell's share is within ``margin`` of its training share"."""
    n = float(counts.sum())
    if n <= 0:
        return 1.0
    share = counts / n
    p = np.ones(len(counts))
    high = np.minimum(reference + margin, 1.0)
    above = (share > high) & (high < 1.0)
    p[above] = np.exp(-n * _kl(share[above], high[above]))
    low = reference - margin
    below = (share < low) & (low > 0.0)
    p[below] = np.minimum(p[below], np.exp(-n * _kl(share[below], low[below])))
    return float(min(1.0, 2 * len(counts) * p.min()))


def importance_weights(importance: np.ndarray, importance_weight: float) -> np.ndarray:
    """BH weights of a group's features, mean 1: ``1 - w`` shared equally, ``w`` by importance."""
    m = len(importance)
    total = float(importance.sum())
    shares = importance / total if total > 0 else np.full(m, 1.0 / m)
    return (1 - importance_weight) + importance_weight * m * shares


def weighted_bh_level(p_values: np.ndarray, weights: np.ndarray, alpha: float) -> float:
    """The cutoff ``t`` of weighted Benjamini-Hochberg (Genovese, Roeder & Wasserman 2006): the
    feature ``i`` is rejected when ``p_i <= weights_i * t``. Weights average 1, so with no drift
    anywhere a file is flagged with probability <= ``alpha`` (the tests are conservative: less)."""
    m = len(p_values)
    if m == 0:
        return 0.0
    ordered = np.sort(p_values / weights)
    passing = np.flatnonzero(ordered <= alpha * np.arange(1, m + 1) / m)
    k = int(passing[-1]) + 1 if len(passing) else 1  # with none: the level a single rejection needs
    return alpha * k / m
