"""Scored uploads in the Dagster UI: the ``scored_uploads`` asset, one partition per upload, downstream of
every group's ``served_model``, with its ``input_drift`` (WARN) and ``input_schema`` (ERROR) checks.

Why a dynamic partition per upload: an upload is the unit a user asks about ("which model versions
priced my file, and did it look like the training data?"), and a partition gives it a page of its own
in the UI (its materialization with metadata, its check results, the run that made it), searchable by
the upload id. An unpartitioned asset would pile every upload into one history; a per-group asset
would split a file whose rows span groups.

Why the scoring runs *report* the materialization instead of being asset jobs: a backlog run
(``score_uploads``) scores many uploads in one process, one step each, with its own retries (a run
process start costs ~2 s, scoring a small file ~0.1 s: docs/batch.md); an asset job materializes
dynamic partitions one run each. So the scoring step itself logs, once the upload's status is safely
recorded, an ``AssetMaterialization`` of the upload's partition and the checks' ``AssetCheckEvaluation``
(``report``): a few event-log writes, no extra run, and the retry and dead-letter paths are unchanged
(an upload that fails on its input reports the failed ``input_schema`` check; a retried step reports
only from the attempt that finished). The asset itself is declared as an ``AssetSpec`` (no function of
its own: "materialize" in the UI would mean upload again).

The two checks are executable from the UI too: they read the upload's recorded status again and give
the same verdict the run reported (``evaluate_drift``, ``evaluate_schema``).
"""

import warnings
from collections.abc import Mapping
from typing import Any

import dagster as dg

from aimq_pipelines.monitoring.drift import DRIFT, NOT_JUDGED
from aimq_pipelines.uploads.resources import UploadsResource
from aimq_serving import schema

SCORED_UPLOADS = dg.AssetKey("scored_uploads")
# The partition key is the upload id (a uuid hex the API made: never a user-given name).
UPLOAD_PARTITIONS = dg.DynamicPartitionsDefinition(name="uploads")
INPUT_DRIFT = "input_drift"
INPUT_SCHEMA = "input_schema"
MONITORING_GROUP = "monitoring"

scored_uploads = dg.AssetSpec(
    SCORED_UPLOADS,
    deps=[dg.AssetKey([group, "served_model"]) for group in schema.MODEL_GROUPS],
    partitions_def=UPLOAD_PARTITIONS,
    group_name=MONITORING_GROUP,
    description="Every scored upload, one partition per upload id: rows, rejected rows, the model version of "
    "each group and the drift verdict. Made by the scoring runs (score_upload, score_uploads).",
    kinds={"excel", "csv"},
)


# -- what the metadata and the checks say --------------------------------------------------------
def group_verdicts(drift: Mapping[str, Any] | None) -> dict[str, str]:
    """The drift verdict of each group the upload had rows of (``drift``: the DriftReport JSON)."""
    if not drift:
        return {}
    return {group: str(g.get("verdict", NOT_JUDGED)) for group, g in (drift.get("groups") or {}).items()}


def drift_summary(drift: Mapping[str, Any]) -> dict[str, Any]:
    """The report without its per-feature charts: the verdicts, and the drifted features with their
    statistic and threshold (the full report is in the upload's status and its result's drift sheet)."""
    groups = {}
    for group, g in (drift.get("groups") or {}).items():
        groups[group] = {
            "verdict": g.get("verdict"),
            "reason": g.get("reason"),
            "rows": g.get("rows"),
            "model_version": g.get("model_version"),
            "profile_version": g.get("profile_version"),
            "drifted_features": [
                {k: f.get(k) for k in ("name", "statistic", "value", "threshold", "importance")}
                for f in g.get("features") or []
                if f.get("drifted")
            ],
        }
    return {
        "verdict": drift.get("verdict"),
        "reason": drift.get("reason"),
        "rows_judged": drift.get("rows_judged", 0),
        "groups": groups,
    }


def drifted_features_text(drift: Mapping[str, Any]) -> str:
    parts = []
    for group, g in (drift.get("groups") or {}).items():
        names = [str(f.get("name")) for f in g.get("features") or [] if f.get("drifted")]
        if g.get("verdict") == DRIFT:
            parts.append(f"group {group}: {', '.join(names) or 'the file as a whole'}")
    return "; ".join(parts)


def evaluate_drift(upload_id: str, drift: Mapping[str, Any] | None) -> dg.AssetCheckEvaluation:
    """``input_drift`` for one upload: fails (WARN) when the file drifted. A file the models could not
    judge (too few rows, a version without a profile) passes, and its description says why it was not
    judged: a check result cannot be "not run", and the verdict is in the metadata."""
    if drift is None:
        return _evaluation(
            INPUT_DRIFT,
            upload_id,
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description="not judged: no drift report was recorded for this upload",
            metadata={"verdict": NOT_JUDGED},
        )
    verdict = str(drift.get("verdict"))
    if verdict == DRIFT:
        description = f"drift: {drifted_features_text(drift)}"
    elif verdict == NOT_JUDGED:
        description = f"not judged: {drift.get('reason')}"
    else:
        description = f"no drift in {int(drift.get('rows_judged') or 0):,} rows judged"
    return _evaluation(
        INPUT_DRIFT,
        upload_id,
        passed=verdict != DRIFT,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "verdict": verdict,
            "group_verdicts": dg.MetadataValue.json(group_verdicts(drift)),
            "drift": dg.MetadataValue.json(drift_summary(drift)),
        },
    )


def evaluate_schema(upload_id: str, failure: str | None, rows_rejected: int = 0) -> dg.AssetCheckEvaluation:
    """``input_schema`` for one upload: fails (ERROR) when the file could not be read as a table of the
    model's columns (``failure``: why); rows refused one by one are counted, not a failure."""
    if failure is not None:
        return _evaluation(
            INPUT_SCHEMA,
            upload_id,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=failure,
            metadata={"reason": failure},
        )
    return _evaluation(
        INPUT_SCHEMA,
        upload_id,
        passed=True,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"read; {rows_rejected:,} rows refused one by one (in the rejected rows file)",
        metadata={"rows_rejected": rows_rejected},
    )


def _evaluation(
    check: str, upload_id: str, *, passed: bool, severity: dg.AssetCheckSeverity, description: str, metadata: dict
) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=SCORED_UPLOADS,
        check_name=check,
        passed=passed,
        severity=severity,
        description=description,
        metadata=metadata,
        partition=upload_id,
    )


def materialization(
    upload_id: str,
    *,
    original_name: str,
    rows_total: int,
    rows_rejected: int,
    model_versions: Mapping[str, int],
    drift: Mapping[str, Any] | None,
) -> dg.AssetMaterialization:
    metadata: dict[str, Any] = {
        "upload_id": upload_id,
        "original_name": original_name,
        "dagster/row_count": rows_total,
        "rows_rejected": rows_rejected,
        "model_versions": dg.MetadataValue.json(dict(model_versions)),
        **{f"model_version_{group}": int(v) for group, v in model_versions.items()},
        "drift_verdict": str(drift.get("verdict")) if drift else NOT_JUDGED,
    }
    if drift:
        metadata["group_verdicts"] = dg.MetadataValue.json(group_verdicts(drift))
        metadata["rows_judged"] = int(drift.get("rows_judged") or 0)
        metadata["drift"] = dg.MetadataValue.json(drift_summary(drift))
        if drift.get("reason"):
            metadata["drift_reason"] = str(drift["reason"])
    return dg.AssetMaterialization(asset_key=SCORED_UPLOADS, partition=upload_id, metadata=metadata)


# -- reporting from a scoring step ----------------------------------------------------------------
def report(context: dg.OpExecutionContext, upload_id: str, events: list) -> None:
    """Log a scoring step's events for ``upload_id``'s partition, adding the partition first (the
    UI lists a dynamic partition's events only once it exists; adding an existing one is a no-op)."""
    context.instance.add_dynamic_partitions(UPLOAD_PARTITIONS.name, [upload_id])
    for event in events:
        context.log_event(event)


def report_scored(
    context: dg.OpExecutionContext,
    upload_id: str,
    *,
    original_name: str,
    rows_total: int,
    rows_rejected: int,
    model_versions: Mapping[str, int],
    drift: Mapping[str, Any] | None,
) -> None:
    report(
        context,
        upload_id,
        [
            materialization(
                upload_id,
                original_name=original_name,
                rows_total=rows_total,
                rows_rejected=rows_rejected,
                model_versions=model_versions,
                drift=drift,
            ),
            evaluate_schema(upload_id, None, rows_rejected),
            evaluate_drift(upload_id, drift),
        ],
    )


def report_refused(context: dg.OpExecutionContext, upload_id: str, reason: str) -> None:
    """An upload whose file could not be read as a table of the model's columns: no materialization
    (nothing was scored), the failed input_schema check with the reason."""
    report(context, upload_id, [evaluate_schema(upload_id, reason)])


# -- the checks, executable from the UI -------------------------------------------------------------
def _record(context: dg.AssetCheckExecutionContext, uploads: UploadsResource) -> Any:
    upload_id = context.partition_key
    record = uploads.status_store().get(upload_id)
    if record is None:
        raise dg.Failure(description=f"upload {upload_id} has no status record (purged, or never accepted)")
    if record.state not in ("succeeded", "failed"):
        raise dg.Failure(description=f"upload {upload_id} is {record.state}: nothing to check until it finished")
    return record


def _result(evaluation: dg.AssetCheckEvaluation) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=evaluation.passed,
        severity=evaluation.severity,
        description=evaluation.description,
        metadata=evaluation.metadata,
    )


# Partitioned checks are a Dagster "preview" (a warning on every import of the code location): the
# checks are partitioned like their asset, so each upload's partition shows its own results.
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
)


@dg.asset_check(
    asset=SCORED_UPLOADS,
    name=INPUT_DRIFT,
    partitions_def=UPLOAD_PARTITIONS,
    description="WARN when the upload drifted from the training data of the model versions that priced it "
    "(docs/monitoring.md). Reported by the scoring run; executed here, it reads the recorded verdict again.",
)
def input_drift(context: dg.AssetCheckExecutionContext, uploads: UploadsResource) -> dg.AssetCheckResult:
    record = _record(context, uploads)
    return _result(evaluate_drift(record.upload_id, record.drift))


@dg.asset_check(
    asset=SCORED_UPLOADS,
    name=INPUT_SCHEMA,
    partitions_def=UPLOAD_PARTITIONS,
    description="ERROR when the upload could not be read as a table of the model's columns (missing columns, "
    "not a spreadsheet, too many rows). Reported by the scoring run; executed here, it reads the recorded "
    "status again (a failed upload fails it with its recorded reason).",
)
def input_schema(context: dg.AssetCheckExecutionContext, uploads: UploadsResource) -> dg.AssetCheckResult:
    record = _record(context, uploads)
    failure = record.error if record.state == "failed" else None
    return _result(evaluate_schema(record.upload_id, failure, record.rows_rejected))
