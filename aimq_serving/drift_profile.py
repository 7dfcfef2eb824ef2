"""A model version's drift profile: what its training data looked like, kept to judge uploads against.

Made once per version from its training data by the model chain (asset ``<group>/drift_profile``)
and stored, signed, with the version (the ``profile`` artifact, at most ``MAX_PROFILE_BYTES``). A
version stored before issue 24 has none: its uploads are scored and their drift says "not judged".

Each feature's values fall into *cells*, the same for the training data and an upload, so that an
upload is judged by counting (streamed per batch, any row count, no raw values kept):

- numeric: ``missing`` (empty, or not a number), ``below min`` (under the training rows' minimum),
  the training rows' decile bins (right-closed, between their minimum and maximum), ``above max``;
- categorical: each training category, ``unseen`` (any other value), ``missing``.

Besides the cells' training shares the profile keeps each feature's importance to the model
(permutation importance on the holdout, as shares summing to 1), the distribution of the model's
holdout predictions and its holdout residuals (quantiles), for the model-health views.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from aimq_serving import schema
from aimq_serving.features import FeatureSpec, _category_codes, _numbers

PROFILE_FORMAT = 1
MAX_PROFILE_BYTES = 1_048_576
NUMERIC_BINS = 10
MISSING = "missing"
UNSEEN = "unseen"
BELOW = "below min"
ABOVE = "above max"
NO_PROFILE = "this model version was stored before drift profiles (issue 24); retrain to judge drift"


class ProfileTooLarge(ValueError):
    pass


@dataclass(frozen=True)
class FeatureProfile:
    name: str
    kind: str  # "numeric" | "categorical"
    cells: tuple[str, ...]  # the cells' names, for reports and charts
    shares: tuple[float, ...]  # each cell's share of the training rows (sum 1)
    importance: float
    # numeric: [min, decile edges..., max] (right-closed bins); categorical: the categories, in the
    # feature spec's order (an encoded code is the category's index).
    boundaries: tuple[float, ...] = ()
    categories: tuple[Any, ...] = ()
    mean: float | None = None
    std: float | None = None
    _bounds: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_bounds", np.asarray(self.boundaries[1:], dtype=np.float64))

    @property
    def minimum(self) -> float:
        return self.boundaries[0]

    @property
    def maximum(self) -> float:
        return self.boundaries[-1]

    def count_encoded(self, column: np.ndarray) -> np.ndarray:
        """Cell counts of a column of valid encoded values (numbers, or category codes)."""
        k = len(self.cells)
        if self.kind == "categorical":
            return np.bincount(column.astype(np.intp), minlength=k)[:k]
        return np.bincount(self._numeric_cells(column.astype(np.float64)), minlength=k)

    def count_raw(self, series: pd.Series) -> np.ndarray:
        """Cell counts of raw cells (rows the encoding refused: any value, missing ones too)."""
        k = len(self.cells)
        missing = missing_cells(series)
        if self.kind == "categorical":
            codes = _category_codes(series, self.categories)
            cells = np.where(codes >= 0, codes, np.where(missing, k - 1, k - 2))
            return np.bincount(cells, minlength=k)
        numbers = _numbers(series)
        cells = np.where(np.isnan(numbers), 0, self._numeric_cells(np.nan_to_num(numbers)))
        return np.bincount(cells, minlength=k)

    def _numeric_cells(self, values: np.ndarray) -> np.ndarray:
        # 1: below min; 2..: the right-closed bins up to max; last: above max (0 is missing).
        cells = np.searchsorted(self._bounds, values, side="left") + 2
        cells[values < self.boundaries[0]] = 1
        return cells

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "cells": list(self.cells),
            "shares": [float(f"{s:.9g}") for s in self.shares],
            "importance": float(f"{self.importance:.6g}"),
        }
        if self.kind == "numeric":
            body.update(boundaries=list(self.boundaries), mean=self.mean, std=self.std)
        else:
            body["categories"] = list(self.categories)
        return body

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> FeatureProfile:
        return cls(
            name=body["name"],
            kind=body["kind"],
            cells=tuple(body["cells"]),
            shares=tuple(float(s) for s in body["shares"]),
            importance=float(body["importance"]),
            boundaries=tuple(float(b) for b in body.get("boundaries", ())),
            categories=tuple(body.get("categories", ())),
            mean=body.get("mean"),
            std=body.get("std"),
        )


def missing_cells(series: pd.Series) -> np.ndarray:
    """Which cells are empty: no value, or blank text."""
    missing = series.isna().to_numpy(dtype=bool)
    if series.dtype == object or pd.api.types.is_string_dtype(series):
        text = series.astype("string").str.strip()
        missing = missing | (text == "").fillna(True).to_numpy(dtype=bool)
    return missing


@dataclass(frozen=True)
class DriftProfile:
    rows: int  # training rows the cells were counted on
    features: tuple[FeatureProfile, ...]
    predictions: dict[str, Any]  # holdout predictions: {"quantiles": [...], "levels": [...]}
    residuals: dict[str, Any]  # holdout residuals (actual - predicted): the same form
    importance: dict[str, Any]  # how the importances were measured

    @classmethod
    def fit(
        cls,
        spec: FeatureSpec,
        features: np.ndarray,
        importance: dict[str, float],
        importance_method: dict[str, Any],
        holdout_predicted: np.ndarray,
        holdout_actual: np.ndarray,
    ) -> DriftProfile:
        """The profile of the encoded training rows ``features`` (columns in ``spec.columns`` order)."""
        numeric_names = {f.name for f in schema.NUMERIC}
        profiles = []
        for j, name in enumerate(spec.columns):
            column = features[:, j].astype(np.float64)
            if name in numeric_names:
                lo, hi = float(column.min()), float(column.max())
                edges = np.unique(np.quantile(column, np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1]))
                edges = edges[(edges > lo) & (edges < hi)]
                boundaries = (lo, *(float(e) for e in edges), hi)
                labels = [f"{a:g} to {b:g}" for a, b in zip(boundaries[:-1], boundaries[1:])]
                labels[0] = f"{lo:g} to {boundaries[1]:g}"
                draft = FeatureProfile(
                    name, "numeric", (MISSING, BELOW, *labels, ABOVE), (), 0.0, boundaries=boundaries
                )
                counts = draft.count_encoded(column)
                profiles.append(
                    FeatureProfile(
                        name,
                        "numeric",
                        draft.cells,
                        tuple((counts / len(column)).tolist()),
                        importance.get(name, 0.0),
                        boundaries=boundaries,
                        mean=float(column.mean()),
                        std=float(column.std()),
                    )
                )
            else:
                categories = spec.categorical[name]
                k = len(categories) + 2
                counts = np.bincount(column.astype(np.intp), minlength=k)[:k]
                profiles.append(
                    FeatureProfile(
                        name,
                        "categorical",
                        (*(str(c) for c in categories), UNSEEN, MISSING),
                        tuple((counts / len(column)).tolist()),
                        importance.get(name, 0.0),
                        categories=categories,
                    )
                )
        levels = np.linspace(0, 1, 41)
        return cls(
            rows=int(len(features)),
            features=tuple(profiles),
            predictions=_quantiles(holdout_predicted, levels),
            residuals=_quantiles(holdout_actual - holdout_predicted, levels),
            importance=importance_method,
        )

    def feature(self, name: str) -> FeatureProfile:
        return next(f for f in self.features if f.name == name)

    def to_json(self) -> bytes:
        body = {
            "format": PROFILE_FORMAT,
            "rows": self.rows,
            "features": [f.to_dict() for f in self.features],
            "predictions": self.predictions,
            "residuals": self.residuals,
            "importance": self.importance,
        }
        raw = json.dumps(body, separators=(",", ":")).encode()
        if len(raw) > MAX_PROFILE_BYTES:
            raise ProfileTooLarge(f"drift profile of {len(raw):,} bytes; at most {MAX_PROFILE_BYTES:,} are stored")
        return raw

    @classmethod
    def from_json(cls, raw: bytes) -> DriftProfile:
        body = json.loads(raw)
        if body.get("format") != PROFILE_FORMAT:
            raise ValueError(f"unsupported drift profile format {body.get('format')!r}")
        return cls(
            rows=int(body["rows"]),
            features=tuple(FeatureProfile.from_dict(f) for f in body["features"]),
            predictions=body["predictions"],
            residuals=body["residuals"],
            importance=body["importance"],
        )


def _quantiles(values: np.ndarray, levels: np.ndarray) -> dict[str, Any]:
    return {
        "levels": [round(float(q), 4) for q in levels],
        "quantiles": [float(f"{v:.7g}") for v in np.quantile(values, levels)],
        "mean": float(np.mean(values)),
        "rows": int(len(values)),
    }
