"""The drift report of one upload: its contract (what the upload status, the result's ``drift`` sheet,
the upload page, ``aimq score`` and the Dagster metadata read), kept here in one place.

JSON form (``DriftReport.to_json()``), stored as the upload status record's ``drift`` field::

    {"verdict": "drift" | "no_drift" | "not_judged", "reason": str | null, "rows_judged": int,
     "groups": {"<group>": {"verdict": ..., "reason": str | null, "rows": int, "model_version": int,
        "profile_version": int | null,
        "features": [{"name", "kind": "numeric" | "categorical", "statistic", "value", "threshold",
                      "drifted", "importance", "missing_rate", "unseen_share", "out_of_range_share"}]}}}

A group is judged only when its model version has a drift profile and the upload has enough of its
rows; the file is ``drift`` when any judged group drifts, ``no_drift`` when at least one group was
judged and none drifts, ``not_judged`` (with the reason) when no group could be judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from aimq_serving import drift_verdict

Verdict = Literal["drift", "no_drift", "not_judged"]
Kind = Literal["numeric", "categorical"]
DRIFT: Verdict = "drift"
NO_DRIFT: Verdict = "no_drift"
NOT_JUDGED: Verdict = "not_judged"
VERDICTS: tuple[Verdict, ...] = (DRIFT, NO_DRIFT, NOT_JUDGED)


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    kind: Kind
    statistic: str  # what ``value`` is (see docs/monitoring.md)
    value: float
    threshold: float
    drifted: bool
    importance: float  # the feature's share of the model's permutation importance on the holdout
    missing_rate: float  # share of the group's rows whose cell is empty or not a value of the feature's kind
    unseen_share: float  # categorical: share of rows with a category the model never saw; numeric: 0
    out_of_range_share: float  # numeric: share of rows outside the training rows' [min, max]; categorical: 0
    # The upload against the reference, cell by cell (bins, categories, missing), for a chart.
    cells: tuple[str, ...] = ()
    reference: tuple[float, ...] = ()
    upload: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "statistic": self.statistic,
            "value": self.value,
            "threshold": self.threshold,
            "drifted": self.drifted,
            "importance": self.importance,
            "missing_rate": self.missing_rate,
            "unseen_share": self.unseen_share,
            "out_of_range_share": self.out_of_range_share,
            "chart": {"cells": list(self.cells), "reference": list(self.reference), "upload": list(self.upload)},
        }


@dataclass(frozen=True)
class GroupDrift:
    group: str
    verdict: Verdict
    reason: str | None
    rows: int
    model_version: int
    profile_version: int | None  # the model version whose profile was compared against; None: none
    features: tuple[FeatureDrift, ...] = ()

    @property
    def drifted_features(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.drifted]

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "rows": self.rows,
            "model_version": self.model_version,
            "profile_version": self.profile_version,
            "features": [f.to_json() for f in self.features],
        }


@dataclass(frozen=True)
class DriftReport:
    verdict: Verdict
    reason: str | None
    rows_judged: int
    groups: dict[str, GroupDrift] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "rows_judged": self.rows_judged,
            "groups": {g: d.to_json() for g, d in self.groups.items()},
        }

    def summary(self) -> str:
        """One line for a person: the verdict and the drifted features by group."""
        return drift_verdict.summary(self.to_json())

    @classmethod
    def not_judged(cls, reason: str) -> DriftReport:
        return cls(NOT_JUDGED, reason, 0, {})
