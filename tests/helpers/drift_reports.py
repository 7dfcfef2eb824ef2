"""Drift reports as the scoring run records them (the JSON of aimq_pipelines/monitoring/drift.py), built
by hand for the monitoring tests: what the retrain sensor, the checks and drift_history read."""

from __future__ import annotations

from typing import Any

from aimq_pipelines.monitoring.drift import DriftReport, FeatureDrift, GroupDrift


def group_report(verdict: str, *, rows: int = 200, version: int = 1, drifted: tuple[str, ...] = ()) -> GroupDrift:
    features = tuple(
        FeatureDrift(
            name=name,
            kind="numeric",
            statistic="ks_pvalue",
            value=1e-6,
            threshold=0.001,
            drifted=True,
            importance=0.5,
            missing_rate=0.0,
            unseen_share=0.0,
            out_of_range_share=0.0,
        )
        for name in drifted
    )
    reason = "too few rows to judge" if verdict == "not_judged" else None
    return GroupDrift("", verdict, reason, rows, version, version if verdict != "not_judged" else None, features)


def report(**groups: GroupDrift) -> dict[str, Any]:
    """A file's report from its groups' (``A=group_report("drift", drifted=("kilometers",))``)."""
    verdicts = {g.verdict for g in groups.values()}
    verdict = "drift" if "drift" in verdicts else "no_drift" if "no_drift" in verdicts else "not_judged"
    judged = sum(g.rows for g in groups.values() if g.verdict != "not_judged")
    named = {
        name: GroupDrift(name, g.verdict, g.reason, g.rows, g.model_version, g.profile_version, g.features)
        for name, g in groups.items()
    }
    return DriftReport(verdict, None if judged else "too few rows to judge", judged, named).to_json()
