"""Champion/challenger: a new model version (the challenger) is served only if its holdout error is no
worse than the served version's (the champion) on the same holdout rows, by more than a set margin.

The error is the mean absolute error of the price (what a user feels; R2 and MAPE are reported by
``holdout_quality``). Both models predict the challenger's holdout: rows the champion fitted on are
not excluded (an older version may have been trained on data that holds them), which can only make
the champion look better, so the guard errs towards keeping the served version. Rows the champion
cannot encode (a category its training data never had) are left out of both errors, and counted.

Used twice: by the blocking ``champion_challenger`` check on ``trained_model`` (shown in the UI, stops
the run before export and promotion), and by ``served_model`` right before it promotes, because that
asset can be materialized alone from the UI, outside any run with the check, and a rollback may have
changed the served version since the check ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from aimq_serving.features import FeatureSpec
from aimq_serving.model_store import ModelStore, ModelStoreError

if TYPE_CHECKING:
    from aimq_pipelines.models.training import TrainedModel


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str
    champion_version: int | None = None
    challenger_mae: float | None = None
    champion_mae: float | None = None
    margin: float = 0.0
    rows_compared: int = 0
    rows_excluded: int = 0

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "reason": self.reason,
            "margin": self.margin,
            "rows_compared": self.rows_compared,
            "rows_excluded": self.rows_excluded,
        }
        if self.champion_version is not None:
            meta["champion_version"] = self.champion_version
        if self.challenger_mae is not None:
            meta["challenger_mae"] = self.challenger_mae
        if self.champion_mae is not None:
            meta["champion_mae"] = self.champion_mae
            meta["allowed_mae"] = self.champion_mae * (1 + self.margin)
        return meta


def recode(matrix: np.ndarray, source: FeatureSpec, target: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Rows encoded with ``source`` as ``target`` encodes them (category codes follow each spec's
    vocabulary), and the mask of rows ``target`` can encode. Same columns required."""
    out = matrix.astype(np.float32, copy=True)
    valid = np.ones(len(matrix), dtype=bool)
    for j, column in enumerate(source.columns):
        if column not in source.categorical:
            continue
        position = {value: i for i, value in enumerate(target.categorical.get(column, ()))}
        mapping = np.array([position.get(value, -1) for value in source.categorical[column]], dtype=np.float64)
        codes = mapping[matrix[:, j].astype(np.intp)]
        valid &= codes >= 0
        out[:, j] = np.where(codes >= 0, codes, 0)
    return out, valid


def judge(challenger: TrainedModel, store: ModelStore, group: str, margin: float) -> Verdict:
    """Whether ``challenger`` may replace the version ``store`` serves for ``group``."""
    current = store.current_version(group, missing_ok=True)
    if current == 0:
        return Verdict(True, "no version is served yet: nothing to compare with", margin=margin)
    try:
        champion = store.get(group, current)
    except ModelStoreError as exc:
        # A served version whose signature fails is refused by every server already: replacing it
        # cannot make serving worse.
        return Verdict(True, f"the served version {current} cannot be loaded ({exc})", current, margin=margin)
    if champion.spec.columns != challenger.spec.columns:
        return Verdict(
            True,
            f"the served version {current} takes other columns ({', '.join(champion.spec.columns)}): "
            "the models cannot be compared on one holdout",
            current,
            margin=margin,
        )
    features, valid = recode(challenger.holdout_x, challenger.spec, champion.spec)
    actual = challenger.holdout_y[valid]
    if not valid.any():
        return Verdict(
            True,
            f"the served version {current} can encode none of the {len(valid)} holdout rows",
            current,
            margin=margin,
            rows_excluded=int(len(valid)),
        )
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):  # training.py: one OpenMP thread on 2 cores
        challenger_pred = challenger.model.predict(challenger.holdout_x[valid])
        champion_pred = champion.load_sklearn().predict(features[valid])
    challenger_mae = float(np.mean(np.abs(actual - challenger_pred)))
    champion_mae = float(np.mean(np.abs(actual - champion_pred)))
    allowed = champion_mae * (1 + margin)
    passed = challenger_mae <= allowed
    relation = "within" if passed else "beyond"
    reason = (
        f"holdout MAE {challenger_mae:,.0f} against the served version {current}'s {champion_mae:,.0f} on the same "
        f"{int(valid.sum()):,} rows: {relation} the allowed {allowed:,.0f} (margin {margin:.1%})"
    )
    if not passed:
        reason += f"; version {current} stays served"
    return Verdict(
        passed,
        reason,
        current,
        challenger_mae,
        champion_mae,
        margin,
        rows_compared=int(valid.sum()),
        rows_excluded=int((~valid).sum()),
    )
