"""Drift of one upload, counted batch by batch while it is scored, judged once at the end.

The scoring threads hand each group's rows of a batch to ``DriftMonitor.add``: the rows the model
priced as their encoded matrix (the cells are counted from it, no second parse), the rows it refused
as their raw cells (an unseen category or a value outside the schema is still drift evidence). Only
cell counts are kept per group and feature, so memory does not grow with the file. ``report`` then
tests every feature (``statistics``) and makes the verdicts of ``drift.DriftReport``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from aimq_pipelines.monitoring.drift import DRIFT, NO_DRIFT, NOT_JUDGED, DriftReport, FeatureDrift, GroupDrift
from aimq_pipelines.monitoring.statistics import feature_p_value, importance_weights, weighted_bh_level
from aimq_serving.drift_profile import NO_PROFILE, DriftProfile, FeatureProfile, missing_cells
from aimq_serving.settings import AimqSettings

STATISTIC = "cell_p_value"  # value: the feature's p-value; drifted when it is <= threshold (its BH level)


@dataclass(frozen=True)
class DriftSettings:
    """See AimqSettings.drift_* and docs/monitoring.md."""

    alpha: float = 0.01
    margin: float = 0.01
    min_rows: int = 30
    importance_weight: float = 0.5

    @classmethod
    def from_settings(cls, settings: AimqSettings) -> DriftSettings:
        return cls(
            alpha=settings.drift_alpha,
            margin=settings.drift_margin,
            min_rows=settings.drift_min_rows,
            importance_weight=settings.drift_importance_weight,
        )


@dataclass(frozen=True)
class Compared:
    """What a group's rows are compared against: the version that priced them and its profile."""

    version: int
    columns: tuple[str, ...]  # the encoded matrix's columns
    profile: DriftProfile | None


class _GroupCounts:
    def __init__(self, compared: Compared):
        self.compared = compared
        profile = compared.profile
        self.features = profile.features if profile is not None else ()
        self.index = [compared.columns.index(f.name) for f in self.features]
        self.counts = [np.zeros(len(f.cells), dtype=np.int64) for f in self.features]
        self.rows = 0  # rows counted (not empty)
        self.empty = 0  # rows of the group without any feature value: nothing to judge in them


class DriftMonitor:
    def __init__(self, compared: dict[str, Compared], settings: DriftSettings | None = None):
        self.settings = settings or DriftSettings()
        self._groups = {g: _GroupCounts(c) for g, c in compared.items()}
        self._lock = threading.Lock()
        self.seconds = 0.0  # spent counting and judging (all threads): the cost of drift in a run

    def add(self, group: str, encoded: np.ndarray, refused: pd.DataFrame) -> None:
        """Count a batch's rows of ``group``: ``encoded`` (the priced rows) and ``refused`` (raw cells)."""
        started = time.perf_counter()
        state = self._groups[group]
        if not state.features:  # no profile: only the rows are counted
            with self._lock:
                state.rows += len(encoded) + len(refused)
                self.seconds += time.perf_counter() - started
            return
        parts = [f.count_encoded(encoded[:, j]) for f, j in zip(state.features, state.index)]
        empty = 0
        if len(refused):
            all_missing = np.ones(len(refused), dtype=bool)
            for f in state.features:
                all_missing &= missing_cells(refused[f.name])
            empty = int(all_missing.sum())
            kept = refused.iloc[np.flatnonzero(~all_missing)] if empty else refused
            for k, f in enumerate(state.features):
                parts[k] = parts[k] + f.count_raw(kept[f.name])
        with self._lock:
            for k, part in enumerate(parts):
                state.counts[k] += part
            state.rows += len(encoded) + len(refused) - empty
            state.empty += empty
            self.seconds += time.perf_counter() - started

    def report(self) -> DriftReport:
        started = time.perf_counter()
        try:
            return self._report()
        finally:
            self.seconds += time.perf_counter() - started

    def _report(self) -> DriftReport:
        s = self.settings
        judged: dict[str, tuple[_GroupCounts, np.ndarray, np.ndarray]] = {}
        reasons: dict[str, str] = {}
        for group, state in self._groups.items():
            if state.rows + state.empty == 0:
                continue
            if state.compared.profile is None:
                reasons[group] = NO_PROFILE.replace("this model version", f"model version {state.compared.version}")
            elif state.rows == 0:
                reasons[group] = f"every feature is missing in the {state.empty:,} rows of group {group}"
            elif state.rows < s.min_rows:
                reasons[group] = (
                    f"too few rows to judge: {state.rows:,} rows of group {group}, at least {s.min_rows:,} are needed"
                )
            else:
                p = np.array(
                    [feature_p_value(c, np.asarray(f.shares), s.margin) for f, c in zip(state.features, state.counts)]
                )
                w = importance_weights(np.array([f.importance for f in state.features]), s.importance_weight)
                judged[group] = (state, p, w)
        if judged:
            level = weighted_bh_level(
                np.concatenate([p for _, p, _ in judged.values()]),
                np.concatenate([w for _, _, w in judged.values()]),
                s.alpha,
            )
        groups: dict[str, GroupDrift] = {}
        for group, state in self._groups.items():
            if state.rows + state.empty == 0:
                continue
            version = state.compared.version
            profile_version = version if state.compared.profile is not None else None
            if group not in judged:
                groups[group] = GroupDrift(group, NOT_JUDGED, reasons[group], state.rows, version, profile_version)
                continue
            _, p, w = judged[group]
            features = tuple(
                _feature(f, c, float(pi), float(wi * level)) for f, c, pi, wi in zip(state.features, state.counts, p, w)
            )
            verdict = DRIFT if any(f.drifted for f in features) else NO_DRIFT
            groups[group] = GroupDrift(group, verdict, None, state.rows, version, profile_version, features)
        if not groups:
            return DriftReport.not_judged("no rows of a model group with a served model to judge")
        rows_judged = sum(d.rows for d in groups.values() if d.verdict != NOT_JUDGED)
        if not judged:
            reason = "; ".join(d.reason or "" for d in groups.values())
            return DriftReport(NOT_JUDGED, reason, 0, groups)
        verdict = DRIFT if any(d.verdict == DRIFT for d in groups.values()) else NO_DRIFT
        return DriftReport(verdict, None, rows_judged, groups)


def _feature(profile: FeatureProfile, counts: np.ndarray, p: float, threshold: float) -> FeatureDrift:
    n = max(int(counts.sum()), 1)
    share = counts / n
    if profile.kind == "numeric":
        missing, unseen, outside = share[0], 0.0, share[1] + share[-1]
    else:
        missing, unseen, outside = share[-1], share[-2], 0.0
    return FeatureDrift(
        name=profile.name,
        kind=profile.kind,
        statistic=STATISTIC,
        value=float(f"{p:.4g}"),
        threshold=float(f"{threshold:.4g}"),
        drifted=p <= threshold,
        importance=round(profile.importance, 4),
        missing_rate=round(float(missing), 4),
        unseen_share=round(float(unseen), 4),
        out_of_range_share=round(float(outside), 4),
        cells=profile.cells,
        reference=tuple(round(x, 4) for x in profile.shares),
        upload=tuple(round(float(x), 4) for x in share),
    )
