"""A drift report (the JSON of aimq_pipelines/monitoring/drift.py's DriftReport) in one line, for
people: the Dagster log, the result's provenance, ``aimq score``. Here (not with the report) so the
CLI and the API, which only see the JSON, word it the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def summary(drift: Mapping[str, Any] | None) -> str:
    if not drift:
        return "drift: not judged (no drift report for this upload)"
    if drift["verdict"] == "not_judged":
        return f"drift: not judged ({drift.get('reason')})"
    rows = f"{drift.get('rows_judged', 0):,} rows judged"
    if drift["verdict"] == "no_drift":
        return f"drift: none found ({rows})"
    parts = []
    for group, judged in drift.get("groups", {}).items():
        names = [f["name"] for f in judged.get("features", []) if f.get("drifted")]
        if judged.get("verdict") == "drift":
            parts.append(f"group {group} (v{judged.get('model_version')}): {', '.join(names)}")
    return f"drift: DRIFT in {'; '.join(parts)} ({rows})"
