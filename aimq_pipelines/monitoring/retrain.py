"""Retraining on persistent drift: the ``drift_retrain`` sensor.

It reads the ``scored_uploads`` materializations in the order they were recorded (its cursor is the
last one's storage id) and keeps, per model group, how many consecutive *judged* uploads of the group
drifted: a ``drift`` verdict adds one, ``no_drift`` resets it, ``not_judged`` (and an upload without
rows of the group) leaves it as it is. When a group reaches ``AIMQ_RETRAIN_DRIFT_UPLOADS`` (k, 3) and
``AIMQ_RETRAIN_COOLDOWN_S`` has passed since the group's last training run (whoever started it: this
sensor, the nightly schedule, the UI, ``aimq train``), the group's chain is requested once: a
``train_models`` run of that group's assets and checks, its reason in the run's ``aimq/retrain_reason``
tag. The count starts again from zero; while drift persists, the next request waits for the cooldown.
The new version is promoted only past the champion/challenger check (models/promotion.py).

Why a sensor rather than declarative automation: the condition is a run of verdicts over a sequence of
events (k consecutive judged uploads of one group, not-judged ones skipped) plus a cooldown counted
from runs of any origin, and the request must carry its reason as a run tag; Dagster's automation
conditions evaluate asset and partition status, not a history of metadata values, and give a
requested run no tags of our own. A sensor's cursor holds exactly this state, and its ticks and their
run requests show in the UI.

Idempotent: each request's run key names the group and the upload that completed the streak, so a
tick the daemon evaluates again after a crash cannot start a second run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg

from aimq_pipelines.models.assets import MODEL_CHAINS
from aimq_pipelines.models.jobs import groups_trained, train_models_job
from aimq_pipelines.monitoring.drift import DRIFT, NO_DRIFT
from aimq_pipelines.monitoring.scored_uploads import SCORED_UPLOADS, group_verdicts
from aimq_serving import schema
from aimq_serving.settings import get_settings

RETRAIN_SENSOR = "drift_retrain"
REASON_TAG = "aimq/retrain_reason"
GROUP_TAG = "aimq/retrain_group"
# Materializations read per tick: a tick stays short however long the sensor was stopped.
PAGE = 500
# Upload ids named in a request's reason (the count is always given).
NAMED_UPLOADS = 5


@dataclass(frozen=True)
class ScoredUpload:
    storage_id: int
    upload_id: str
    verdicts: dict[str, str]  # group -> verdict
    drifted: dict[str, list[str]]  # group -> drifted feature names


@dataclass
class GroupState:
    streak: list[str] = field(default_factory=list)  # ids of the consecutive drifting judged uploads
    features: list[str] = field(default_factory=list)  # the features they drifted in, first seen first
    requested_at: float | None = None  # the last request this sensor made


@dataclass
class RetrainState:
    """The sensor's cursor: where it stopped reading, and each group's streak."""

    after: int | None = None
    groups: dict[str, GroupState] = field(default_factory=dict)

    def to_cursor(self) -> str:
        return json.dumps(
            {
                "after": self.after,
                "groups": {
                    g: {"streak": s.streak[-1000:], "features": s.features, "requested_at": s.requested_at}
                    for g, s in self.groups.items()
                },
            }
        )

    @classmethod
    def from_cursor(cls, cursor: str | None) -> RetrainState:
        if not cursor:
            return cls()
        data = json.loads(cursor)
        return cls(
            after=data.get("after"),
            groups={g: GroupState(**s) for g, s in (data.get("groups") or {}).items()},
        )

    def group(self, group: str) -> GroupState:
        return self.groups.setdefault(group, GroupState())


@dataclass(frozen=True)
class RetrainRequest:
    group: str
    upload_id: str  # the upload that completed the streak
    storage_id: int
    reason: str


def feed(
    state: RetrainState,
    uploads: Iterable[ScoredUpload],
    *,
    k: int,
    cooldown_s: float,
    last_trained: dict[str, float | None],
    now: float,
) -> list[RetrainRequest]:
    """Advance ``state`` over ``uploads`` (in recorded order); the retrains they call for.

    ``last_trained``: when each group's last training run was created (None: never); a request made
    here counts as one from then on."""
    requests = []
    for upload in uploads:
        state.after = upload.storage_id
        for group, verdict in upload.verdicts.items():
            if group not in schema.MODEL_GROUPS:
                continue
            g = state.group(group)
            if upload.upload_id in g.streak:
                continue  # the same upload scored again (a re-executed run): counted once
            if verdict == NO_DRIFT:
                g.streak, g.features = [], []
            elif verdict == DRIFT:
                g.streak.append(upload.upload_id)
                g.features += [f for f in upload.drifted.get(group, []) if f not in g.features]
            if verdict != DRIFT or len(g.streak) < k:
                continue
            last = max((t for t in (last_trained.get(group), g.requested_at) if t is not None), default=None)
            if last is not None and now - last < cooldown_s:
                continue  # drift persists: the next drifting upload after the cooldown asks again
            named = ", ".join(g.streak[-NAMED_UPLOADS:])
            reason = f"drift in {len(g.streak)} consecutive judged uploads of group {group} (k={k}; last: {named})" + (
                f"; drifted features: {', '.join(g.features[:10])}" if g.features else ""
            )
            requests.append(RetrainRequest(group, upload.upload_id, upload.storage_id, reason))
            g.streak, g.features, g.requested_at = [], [], now
    return requests


def read_uploads(instance: dg.DagsterInstance, after: int | None, limit: int = PAGE) -> list[ScoredUpload]:
    """The scored_uploads materializations recorded after storage id ``after``, oldest first."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SCORED_UPLOADS, after_storage_id=after), limit=limit, ascending=True
    ).records
    uploads = []
    for record in records:
        materialization = record.asset_materialization
        if materialization is None:
            continue
        meta = materialization.metadata
        drift = meta["drift"].value if "drift" in meta else None
        drifted = {
            group: [f["name"] for f in g.get("drifted_features", [])]
            for group, g in ((drift or {}).get("groups") or {}).items()
        }
        verdicts = meta["group_verdicts"].value if "group_verdicts" in meta else group_verdicts(drift)
        uploads.append(ScoredUpload(record.storage_id, record.partition_key or "", dict(verdicts), drifted))
    return uploads


def last_training_runs(instance: dg.DagsterInstance, limit: int = 50) -> dict[str, float | None]:
    """When each group's newest train_models run (of any status, queued ones too) was created."""
    found: dict[str, float | None] = dict.fromkeys(schema.MODEL_GROUPS)
    for record in instance.get_run_records(filters=dg.RunsFilter(job_name=train_models_job.name), limit=limit):
        for group in groups_trained(record.dagster_run):
            if found[group] is None:
                found[group] = record.create_timestamp.timestamp()
        if all(v is not None for v in found.values()):
            break
    return found


def chain_of(group: str) -> tuple[list[dg.AssetKey], list[dg.AssetCheckKey]]:
    """The asset and check keys of one group's model chain."""
    assets: list[dg.AssetKey] = []
    checks: list[dg.AssetCheckKey] = []
    for item in MODEL_CHAINS:
        if isinstance(item, dg.AssetChecksDefinition):
            checks += [key for key in item.check_keys if key.asset_key.path[0] == group]
        else:
            assets += [key for key in item.keys if key.path[0] == group]
            checks += [key for key in item.check_keys if key.asset_key.path[0] == group]
    return assets, checks


def run_request(request: RetrainRequest) -> dg.RunRequest:
    assets, checks = chain_of(request.group)
    return dg.RunRequest(
        run_key=f"retrain-{request.group}-{request.storage_id}",
        job_name=train_models_job.name,
        asset_selection=assets,
        asset_check_keys=checks,
        tags={
            REASON_TAG: request.reason,
            GROUP_TAG: request.group,
            "aimq/retrain_upload": request.upload_id,
        },
    )


def evaluate(context: dg.SensorEvaluationContext, k: int, cooldown_s: float) -> dg.SensorResult:
    state = RetrainState.from_cursor(context.cursor)
    uploads = read_uploads(context.instance, state.after)
    requests: list[RetrainRequest] = []
    if uploads:
        # Read lazily: a tick without a drifting streak asks nothing of the run storage.
        last_trained: dict[str, float | None] | None = None
        if any(v == DRIFT for u in uploads for v in u.verdicts.values()):
            last_trained = last_training_runs(context.instance)
        requests = feed(state, uploads, k=k, cooldown_s=cooldown_s, last_trained=last_trained or {}, now=time.time())
    for request in requests:
        context.log.info(f"requesting a retrain of group {request.group}: {request.reason}")
    return dg.SensorResult(run_requests=[run_request(r) for r in requests], cursor=state.to_cursor())


@dg.sensor(
    name=RETRAIN_SENSOR,
    job=train_models_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a group's model chain once its drift persists (AIMQ_RETRAIN_DRIFT_UPLOADS consecutive "
    "judged uploads drifted) and AIMQ_RETRAIN_COOLDOWN_S has passed since its last training run; the reason "
    "is the run's aimq/retrain_reason tag.",
)
def drift_retrain(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    settings = get_settings()
    return evaluate(context, settings.retrain_drift_uploads, settings.retrain_cooldown_s)
