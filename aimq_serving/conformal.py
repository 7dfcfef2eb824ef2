"""Split-conformal price ranges, calibrated once per model version and stored (signed) with it.

At training a calibration split, rows the model did not fit, is priced; each row's score is
``|log(price) - log(predicted)|``, the error as a ratio. For a coverage level ``c`` the range is
``[predicted / f, predicted * f]`` with ``f = exp(q)`` and ``q`` the ``ceil((n + 1) c)``-th smallest
of the ``n`` scores: for a new row exchangeable with the calibration rows the range holds the true
price with probability at least ``c`` (split conformal prediction, Vovk et al.; Lei et al. 2018).

Why the ratio rather than the absolute error: the same coverage at about the same mean width
(``benchmarks/coverage_benchmark.py`` measures both), a range that follows the row (narrow for a
cheap car, wide for an expensive one: normalized conformal with the prediction as the scale), and a
low end that is never negative. The scores are kept whole (sorted), so a request can ask for any
level in ``[MIN_COVERAGE, MAX_COVERAGE]``; ``factor`` is then one list lookup, no allocation.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MIN_COVERAGE = 0.5
MAX_COVERAGE = 0.99
# Fewer calibration rows than this cannot give a finite range at MAX_COVERAGE: ceil((n+1)0.99) <= n.
MIN_CALIBRATION_ROWS = 99
# Predictions are prices (positive); a non-positive one is scored as this, so its log is defined.
_FLOOR = 1e-9


def scores(actual: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Each calibration row's nonconformity score: the error as a log ratio."""
    return np.abs(np.log(np.maximum(actual, _FLOOR)) - np.log(np.maximum(predicted, _FLOOR)))


@dataclass(frozen=True)
class Calibration:
    scores: tuple[float, ...]  # sorted ascending
    split: dict[str, Any]  # how the calibration rows were drawn (fraction, seed, rows)
    # exp(score) per score: the factor of each possible level, computed once per loaded version.
    _factors: list[float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_factors", [math.exp(s) for s in self.scores])

    @classmethod
    def fit(cls, actual: np.ndarray, predicted: np.ndarray, split: dict[str, Any]) -> Calibration:
        if len(actual) < MIN_CALIBRATION_ROWS:
            raise ValueError(
                f"{len(actual)} calibration rows; at least {MIN_CALIBRATION_ROWS} are needed for a "
                f"{MAX_COVERAGE:.0%} range"
            )
        return cls(tuple(float(s) for s in np.sort(scores(actual, predicted))), split)

    def factor(self, coverage: float) -> float:
        """``f`` of the range ``[p / f, p * f]`` at ``coverage`` (in [MIN_COVERAGE, MAX_COVERAGE])."""
        n = len(self._factors)
        return self._factors[min(n, math.ceil((n + 1) * coverage)) - 1]

    def to_json(self) -> bytes:
        # 7 significant digits: a float32's precision, plenty for a ratio, and half the bytes.
        body = {"method": "split_conformal", "score": "abs_log_ratio", "split": self.split}
        body["scores"] = [float(f"{s:.7g}") for s in self.scores]
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Calibration:
        body = json.loads(raw)
        return cls(tuple(body["scores"]), body["split"])


def bounds(prices: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """The range of each price at the level whose factor is ``factor``."""
    return prices / factor, prices * factor


NO_CALIBRATION = "this model version was stored before ranges were calibrated (issue 25); retrain to get them"
