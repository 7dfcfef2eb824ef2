"""The result workbook's ``drift`` sheet: one row per model group and feature, the verdicts first."""

from __future__ import annotations

import pyarrow as pa

from aimq_pipelines.monitoring.drift import DriftReport

COLUMNS = (
    "model_group",
    "feature",
    "kind",
    "drifted",
    "statistic",
    "value",
    "threshold",
    "importance",
    "missing_rate",
    "unseen_share",
    "out_of_range_share",
    "group_verdict",
    "rows",
    "model_version",
    "profile_version",
    "reason",
)
_SHARES = ("value", "threshold", "importance", "missing_rate", "unseen_share", "out_of_range_share")


def drift_rows(report: DriftReport | None) -> pa.Table | None:
    """The sheet's rows; a group that was not judged has one row saying why (no feature)."""
    if report is None:
        return None
    rows: list[dict[str, object]] = []
    for group, judged in report.groups.items():
        common = {
            "model_group": group,
            "group_verdict": judged.verdict,
            "rows": judged.rows,
            "model_version": judged.model_version,
            "profile_version": judged.profile_version,
            "reason": judged.reason,
        }
        if not judged.features:
            rows.append(common)
        for f in judged.features:
            rows.append(
                {
                    **common,
                    "feature": f.name,
                    "kind": f.kind,
                    "drifted": f.drifted,
                    "statistic": f.statistic,
                    "value": f.value,
                    "threshold": f.threshold,
                    "importance": f.importance,
                    "missing_rate": f.missing_rate,
                    "unseen_share": f.unseen_share,
                    "out_of_range_share": f.out_of_range_share,
                }
            )
    if not rows:
        rows.append({"group_verdict": report.verdict, "reason": report.reason})
    types = {
        "drifted": pa.bool_(),
        "rows": pa.int64(),
        "model_version": pa.int64(),
        "profile_version": pa.int64(),
        **{c: pa.float64() for c in _SHARES},
    }
    schema = pa.schema([(c, types.get(c, pa.string())) for c in COLUMNS])
    return pa.table({c: [r.get(c) for r in rows] for c in COLUMNS}, schema=schema)
