"""Each group's ``drift_history`` asset: its recent scored uploads at a glance, and the sensor that keeps
it fresh while uploads arrive.

The metadata of a materialization: a table of the group's last ``AIMQ_DRIFT_HISTORY_UPLOADS`` uploads
(verdict, rows, model version, drifted features), a chart of them (a PNG in markdown, the one way
Dagster 1.13's metadata shows an image: it has no image type), and numbers (drift share, the current
streak of drifting uploads) that the asset's "Plots" tab charts across materializations.

Refreshed by ``drift_history_refresh``: a run of the ``refresh_drift_history`` job for the groups that
had new uploads, at most once per ``AIMQ_DRIFT_HISTORY_REFRESH_S``, so a burst of uploads costs one run,
not one per upload (a run process takes the place of a scoring run in the queue: docs/monitoring.md).
Those runs are deleted by the purge_uploads job once older than the uploads' retention.
"""

import datetime
import io
import json
import time
from dataclasses import dataclass

import dagster as dg

from aimq_pipelines.models.training import png_markdown
from aimq_pipelines.monitoring.drift import DRIFT, NO_DRIFT, NOT_JUDGED
from aimq_pipelines.monitoring.scored_uploads import MONITORING_GROUP, SCORED_UPLOADS
from aimq_serving import schema
from aimq_serving.settings import get_settings

HISTORY_JOB = "refresh_drift_history"
HISTORY_SENSOR = "drift_history_refresh"
# Materializations read per page while looking for a group's recent uploads, and at most this many pages.
PAGE = 500
MAX_PAGES = 20


def history_key(group: str) -> dg.AssetKey:
    return dg.AssetKey([group, "drift_history"])


@dataclass(frozen=True)
class GroupUpload:
    upload_id: str
    scored_at: float
    verdict: str
    rows: int
    model_version: int | None
    drifted: list[str]
    reason: str | None


def recent_uploads(instance: dg.DagsterInstance, group: str, count: int) -> list[GroupUpload]:
    """The group's last ``count`` scored uploads (those with rows of the group), oldest first."""
    found: list[GroupUpload] = []
    cursor = None
    for _ in range(MAX_PAGES):
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=SCORED_UPLOADS), limit=PAGE, cursor=cursor, ascending=False
        )
        for record in page.records:
            upload = _group_upload(record, group)
            if upload is not None:
                found.append(upload)
                if len(found) == count:
                    return found[::-1]
        if not page.has_more:
            break
        cursor = page.cursor
    return found[::-1]


def _group_upload(record: dg.EventLogRecord, group: str) -> GroupUpload | None:
    materialization = record.asset_materialization
    if materialization is None:
        return None
    meta = materialization.metadata
    versions = meta["model_versions"].value if "model_versions" in meta else {}
    drift = meta["drift"].value if "drift" in meta else None
    g = ((drift or {}).get("groups") or {}).get(group)
    if g is None and group not in versions:
        return None
    return GroupUpload(
        upload_id=record.partition_key or "",
        scored_at=record.timestamp,
        verdict=str(g.get("verdict")) if g else NOT_JUDGED,
        rows=int(g.get("rows") or 0) if g else 0,
        model_version=versions.get(group),
        drifted=[f["name"] for f in g.get("drifted_features", [])] if g else [],
        reason=(g.get("reason") if g else "no drift report recorded") or None,
    )


def streak(uploads: list[GroupUpload]) -> int:
    """Consecutive drifting judged uploads at the end (not-judged ones skipped), as the retrain sensor counts."""
    count = 0
    for upload in reversed(uploads):
        if upload.verdict == NO_DRIFT:
            break
        if upload.verdict == DRIFT:
            count += 1
    return count


def chart_png(group: str, uploads: list[GroupUpload]) -> bytes:
    """One bar per upload (oldest left): its drifted features' count, coloured by verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    colours = {DRIFT: "#dc2626", NO_DRIFT: "#16a34a", NOT_JUDGED: "#9ca3af"}
    fig, ax = plt.subplots(figsize=(7, 2.6), dpi=90)
    xs = range(len(uploads))
    heights = [max(len(u.drifted), 1) if u.verdict == DRIFT else 0.15 for u in uploads]
    ax.bar(xs, heights, color=[colours.get(u.verdict, "#9ca3af") for u in uploads], width=0.8)
    legend = [Patch(color=colour, label=verdict.replace("_", " ")) for verdict, colour in colours.items()]
    ax.set_xlabel(f"last {len(uploads)} uploads with rows of group {group} (oldest left)")
    ax.set_ylabel("drifted features")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Group {group}: drift per upload", loc="left")
    ax.legend(handles=legend, loc="lower right", bbox_to_anchor=(1, 1), fontsize=8, ncols=3, frameon=False)
    ax.set_xticks([])
    ax.grid(axis="y", alpha=0.25)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def history_metadata(group: str, uploads: list[GroupUpload]) -> dict:
    judged = [u for u in uploads if u.verdict in (DRIFT, NO_DRIFT)]
    drifted = [u for u in judged if u.verdict == DRIFT]
    table = dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {
                    "upload_id": u.upload_id,
                    "scored_at": datetime.datetime.fromtimestamp(u.scored_at, datetime.UTC).strftime(
                        "%Y-%m-%d %H:%M:%S"
                    ),
                    "verdict": u.verdict,
                    "rows": u.rows,
                    "model_version": u.model_version if u.model_version is not None else -1,
                    "drifted_features": ", ".join(u.drifted) or (u.reason or "" if u.verdict == NOT_JUDGED else ""),
                }
            )
            for u in reversed(uploads)  # newest first
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("upload_id", "string"),
                dg.TableColumn("scored_at", "string", description="UTC"),
                dg.TableColumn("verdict", "string"),
                dg.TableColumn("rows", "int", description="rows of this group"),
                dg.TableColumn("model_version", "int", description="-1: not recorded"),
                dg.TableColumn("drifted_features", "string", description="or why not judged"),
            ]
        ),
    )
    meta: dict = {
        "uploads": len(uploads),
        "judged": len(judged),
        "drifted": len(drifted),
        "drift_share": dg.MetadataValue.float(len(drifted) / len(judged) if judged else 0.0),
        "drifting_streak": streak(uploads),
        "recent_uploads": table,
    }
    if uploads:
        meta["chart"] = dg.MetadataValue.md(png_markdown(chart_png(group, uploads), f"group {group}: drift per upload"))
        meta["latest_upload"] = uploads[-1].upload_id
    return meta


def build_drift_history(group: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=history_key(group),
        deps=[SCORED_UPLOADS],
        group_name=MONITORING_GROUP,
        description=f"Group {group}'s recent scored uploads: verdicts, drifted features, a chart, the drift share.",
        kinds={"python"},
    )
    def drift_history(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        uploads = recent_uploads(context.instance, group, get_settings().drift_history_uploads)
        context.log.info(f"group {group}: {len(uploads)} recent uploads, drifting streak {streak(uploads)}")
        return dg.MaterializeResult(metadata=history_metadata(group, uploads))

    return drift_history


DRIFT_HISTORIES = [build_drift_history(group) for group in schema.MODEL_GROUPS]

refresh_drift_history_job = dg.define_asset_job(
    HISTORY_JOB,
    selection=dg.AssetSelection.assets(*(history_key(g) for g in schema.MODEL_GROUPS)),
    executor_def=dg.in_process_executor,
    description="Refresh the drift_history asset of the groups with new scored uploads.",
    tags={"aimq/kind": "monitoring"},
)


def _new_groups(instance: dg.DagsterInstance, after: int | None) -> tuple[set[str], int | None]:
    """The groups with uploads recorded after storage id ``after``, and the last storage id read."""
    groups: set[str] = set()
    while True:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=SCORED_UPLOADS, after_storage_id=after), limit=PAGE, ascending=True
        ).records
        for record in records:
            meta = record.asset_materialization.metadata if record.asset_materialization else {}
            groups |= set(meta["model_versions"].value) if "model_versions" in meta else set()
            after = record.storage_id
        if len(records) < PAGE:
            return groups & set(schema.MODEL_GROUPS), after


def refresh(context: dg.SensorEvaluationContext, refresh_s: float, now: float | None = None) -> dg.SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else {}
    now = time.time() if now is None else now
    new, after = _new_groups(context.instance, cursor.get("after"))
    pending = sorted(set(cursor.get("pending", [])) | new)
    last = cursor.get("refreshed_at")
    requests = []
    if pending and (last is None or now - last >= refresh_s):
        requests.append(
            dg.RunRequest(
                run_key=f"drift-history-{after}",
                job_name=HISTORY_JOB,
                asset_selection=[history_key(g) for g in pending],
            )
        )
        pending, last = [], now
    return dg.SensorResult(
        run_requests=requests, cursor=json.dumps({"after": after, "pending": pending, "refreshed_at": last})
    )


@dg.sensor(
    name=HISTORY_SENSOR,
    job=refresh_drift_history_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Refreshes the drift_history of the groups with new scored uploads, at most once per "
    "AIMQ_DRIFT_HISTORY_REFRESH_S.",
)
def drift_history_refresh(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    return refresh(context, get_settings().drift_history_refresh_s)
