"""The scoring jobs: read an upload, score every valid row, write the result, report progress.

``score_upload`` scores one upload (op ``score_file``, configured with its queue message).
``score_uploads`` scores a backlog, uploads the sensor found waiting together: ``list_uploads``
yields one dynamic output per upload (keyed by its id) and each is scored by its own
``score_listed_file[<id>]`` step, the same function, which succeeds, retries and fails on its own. A run
process start costs ~2 s of CPU, scoring a small file ~0.1 s: a backlog shares one start. Every
scoring run carries the tag ``aimq/upload.<id>`` for each upload it scores (``runs_of_upload``).

Failures are sorted by what a retry can fix:

- bad input (unreadable file, missing columns, too many rows, checksum mismatch) and a model whose
  signature fails: the upload is marked failed with the reason and the op raises
  ``dg.Failure(allow_retries=False)``: no op retry, and no run retry either (dagster.yaml has
  ``retry_on_asset_or_op_failure: false``);
- anything else (Redis, storage, broker hiccups) is retried by the op's policy, with exponential
  backoff and jitter; the last attempt marks the upload failed before giving up;
- a crashed run process is retried as a whole by run retries (dagster.yaml), and the run-failure
  sensor marks the upload failed once no retry follows (``aimq_pipelines/uploads/sensors.py``).

A failed upload is rerun by re-executing its run in the Dagster UI: the run config holds the
upload's message, and the rerun takes the upload back to ``running``.

The run first claims the upload's input: a body the API left in ``incoming/`` (killed between the
broker's confirm and the move) is moved into place. No body and no status record means the upload
was never acknowledged (the API answered 503, or died first): the run ends without scoring and
without creating a record, since no client holds that id.
"""

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
from pydantic import ValidationError

from aimq_pipelines.models.resources import ModelStoreResource
from aimq_pipelines.monitoring import scored_uploads
from aimq_pipelines.monitoring.monitor import DriftSettings
from aimq_pipelines.uploads.input_table import BadInput, InputTable
from aimq_pipelines.uploads.provenance import UploadFacts
from aimq_pipelines.uploads.resources import UploadsResource
from aimq_pipelines.uploads.scoring import PinnedModels, score_file
from aimq_serving.model_store import TamperedModel
from aimq_serving.uploads.messages import UploadMessage
from aimq_serving.uploads.status import StatusUnavailable, UploadStatusStore

UPLOAD_ID_TAG = "aimq/upload_id"  # on a run of one upload
ORIGINAL_NAME_TAG = "aimq/original_name"
UPLOAD_TAG_PREFIX = "aimq/upload."  # + upload id, on every scoring run: see upload_tag
UPLOAD_COUNT_TAG = "aimq/uploads"  # on a backlog run: how many uploads it scores
# On every scoring run the sensor requests: the bytes of its uploads, what the run launcher decides
# by where it runs (aimq_pipelines/run_launcher.py).
UPLOAD_BYTES_TAG = "aimq/upload_bytes"

# A large file's progress goes to the run's log at most this often (the upload's status has every part).
PROGRESS_LOG_S = 1.0

RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=2.0, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


# A scoring step's config is its upload's queue message, field for field (without the wire format's
# ``version``): the Dagster UI shows it, the launchpad scaffolds it, and the step validates it into an
# ``UploadMessage`` once. The fields come from the message itself, so there is no copy to keep in
# step. Permissive, as the message ignores fields it does not know: runs created before
# ``stored_path`` left the message carry it in their config, and still launch, retry and re-execute.
UPLOAD_CONFIG = dg.Permissive(
    {
        name: dg.Field(int if field.annotation is int else str, is_required=field.is_required())
        for name, field in UploadMessage.model_fields.items()
        if name != "version"
    }
)


def upload_config(message: UploadMessage) -> dict[str, Any]:
    """A message as a scoring step's config (``UPLOAD_CONFIG``)."""
    return message.model_dump(mode="json", exclude={"version"})


@dg.op(
    name="score_file",
    config_schema=UPLOAD_CONFIG,
    retry_policy=RETRY_POLICY,
    description="Score one uploaded file with the served models.",
)
def score_file_op(
    context: dg.OpExecutionContext, uploads: UploadsResource, model_store: ModelStoreResource
) -> dg.Output[None]:
    return score_upload(context, context.op_config, uploads, model_store)


def score_upload(
    context: dg.OpExecutionContext,
    upload: Mapping[str, Any],
    uploads: UploadsResource,
    model_store: ModelStoreResource,
) -> dg.Output[None]:
    """Score one upload (its ``UPLOAD_CONFIG``) and record its status: the work of a ``score_file``
    step, alone in a run (``score_upload``) or one of a backlog's (``score_uploads``)."""
    try:
        message = UploadMessage.model_validate(upload)
    except ValidationError as exc:  # a hand-written run config (launchpad): no retry fixes it
        raise dg.Failure(description=f"invalid upload in the run config: {exc}", allow_retries=False) from exc
    settings = uploads.settings()
    storage = uploads.storage(settings)
    status = uploads.status_store(settings)
    upload_id = message.upload_id
    source = storage.claim_input(upload_id, message.format)
    if source is None and status.get(upload_id) is None:
        # No file and no record: the API removed the body after answering 503 (a confirm it
        # gave up on reached the broker anyway), or died before accepting it. No client holds
        # this id, so there is nothing to score and nothing to report.
        context.log.info(f"upload {upload_id} was withdrawn before it was accepted: nothing to score")
        return dg.Output(None, metadata={"upload_id": upload_id, "withdrawn": True})
    status.start(message, context.run_id)
    logged = time.monotonic()  # when the step last wrote a line to the run's log

    def progress(rows_done: int, rows_rejected: int) -> None:
        nonlocal logged
        # Every line is an event Dagster stores (a write of several ms): a small file's one part
        # needs no line of its own, a large file's parts are logged at most every PROGRESS_LOG_S.
        if time.monotonic() - logged >= PROGRESS_LOG_S:
            logged = time.monotonic()
            context.log.info(f"upload {upload_id}: {rows_done:,} rows done, {rows_rejected:,} rejected")
        try:
            status.progress(upload_id, rows_done, rows_rejected)
        except StatusUnavailable as exc:  # progress is informative; the final state is what counts
            context.log.warning(f"could not record progress: {exc}")

    try:
        if source is None or not source.is_file():
            raise BadInput("the uploaded file is no longer stored (it was removed, or its upload was refused)")
        work_dir = storage.work_dir(upload_id)
        table = InputTable.open(source, message.format, sha256=message.sha256, work_dir=work_dir)
        if table.rows_expected is not None:
            try:
                status.expect(upload_id, table.rows_expected)
            except StatusUnavailable as exc:
                context.log.warning(f"could not record the expected row count: {exc}")
        models = PinnedModels.from_cache(model_store.model_cache())
        expected = f"; about {table.rows_expected:,} data rows" if table.rows_expected is not None else ""
        context.log.info(
            f"scoring upload {upload_id} ({message.original_name!r}, {message.size:,} bytes, {message.format}"
            f"{expected}) with models "
            + ", ".join(f"{g} v{m.version}" for g, m in models.models.items())
            + "".join(f"; {g}: {why}" for g, why in models.unavailable.items())
        )
        logged = time.monotonic()
        result = score_file(
            table,
            result_path=storage.result_path(upload_id, message.format),
            rejected_path=storage.rejected_path(upload_id),
            models=models,
            max_rows=settings.max_upload_rows,
            chunk_rows=settings.scoring_chunk_rows,
            parsers=settings.scoring_parsers,
            work_dir=work_dir,
            progress=progress,
            upload=UploadFacts(upload_id, message.original_name, message.sha256),
            about_path=storage.about_path(upload_id),
            coverage=settings.coverage,
            drift=DriftSettings.from_settings(settings),
        )
    except (BadInput, TamperedModel) as exc:
        status.fail(upload_id, str(exc))
        if isinstance(exc, BadInput):
            scored_uploads.report_refused(context, upload_id, str(exc))
        raise dg.Failure(
            description=f"upload {upload_id} failed: {exc}",
            metadata={"upload_id": upload_id, "reason": str(exc)},
            allow_retries=False,
        ) from exc
    except Exception as exc:
        if context.retry_number >= RETRY_POLICY.max_retries:
            _fail_quietly(context, status, upload_id, f"gave up after {context.retry_number + 1} attempts: {exc}")
        raise
    finally:
        storage.clear_work(upload_id)

    status.succeed(
        upload_id,
        rows_total=result.rows_total,
        rows_rejected=result.rows_rejected,
        model_versions=result.model_versions,
        stats=result.stats,
        data_sheet=result.data_sheet,
        header_row=result.header_row,
        drift=result.drift.to_json() if result.drift is not None else None,
    )
    # Once its status is recorded: the upload's partition of scored_uploads, with its checks.
    scored_uploads.report_scored(
        context,
        upload_id,
        original_name=message.original_name,
        rows_total=result.rows_total,
        rows_rejected=result.rows_rejected,
        model_versions=result.model_versions,
        drift=result.drift.to_json() if result.drift is not None else None,
    )
    drift = f"; {result.drift.summary()}" if result.drift is not None else ""
    context.log.info(
        f"upload {upload_id} scored: {result.rows_total:,} rows, {result.rows_rejected:,} rejected{drift}; "
        f"stats {result.stats}"
    )
    return dg.Output(
        None,
        metadata={
            "upload_id": upload_id,
            "rows_total": result.rows_total,
            "rows_rejected": result.rows_rejected,
            "data_sheet": result.data_sheet or "",
            "header_row": result.header_row,
            "model_versions": dg.MetadataValue.json(result.model_versions),
            **{k: float(v) for k, v in result.stats.items()},
        },
    )


def _fail_quietly(context: dg.OpExecutionContext, status: UploadStatusStore, upload_id: str, reason: str) -> None:
    try:
        status.fail(upload_id, reason)
    except StatusUnavailable:
        # The run fails anyway; the run-failure sensor marks the upload once Redis is back.
        context.log.warning(f"could not mark upload {upload_id} failed: Redis unavailable")


@dg.job(
    name="score_upload",
    executor_def=dg.in_process_executor,
    description="Score one uploaded file (started by the upload sensor, one run per upload).",
    tags={"aimq/kind": "batch-scoring"},
)
def score_upload_job() -> None:
    score_file_op()


@dg.op(
    name="list_uploads",
    # A backlog: the queue messages of uploads that were waiting together.
    config_schema={"uploads": [UPLOAD_CONFIG]},
    out=dg.DynamicOut(dict),
    description="One output per upload of the backlog, keyed by its upload id.",
)
def list_uploads_op(context: dg.OpExecutionContext) -> Iterator[dg.DynamicOutput[dict]]:
    for upload in context.op_config["uploads"]:
        yield dg.DynamicOutput(dict(upload), mapping_key=upload["upload_id"])


@dg.op(
    name="score_listed_file",  # op names are unique in a code location: score_file is score_upload's
    retry_policy=RETRY_POLICY,
    description="Score one uploaded file of the backlog; it succeeds, retries and fails on its own.",
)
def score_listed_file_op(
    context: dg.OpExecutionContext, upload: dict, uploads: UploadsResource, model_store: ModelStoreResource
) -> dg.Output[None]:
    return score_upload(context, upload, uploads, model_store)


@dg.job(
    name="score_uploads",
    executor_def=dg.in_process_executor,
    description="Score a backlog of uploaded files, each its own step (started by the upload sensor when "
    "uploads were waiting together: one process start for all of them).",
    tags={"aimq/kind": "batch-scoring"},
)
def score_uploads_job() -> None:
    list_uploads_op().map(score_listed_file_op)


SCORING_JOBS = (score_upload_job, score_uploads_job)


def upload_tag(upload_id: str) -> str:
    """The tag every scoring run carries per upload it scores (value: the upload id): "which run
    scored upload X" is a tag filter, for one upload per run as for a backlog."""
    return UPLOAD_TAG_PREFIX + upload_id


def runs_of_upload(
    instance: dg.DagsterInstance, upload_id: str, extra_tags: dict[str, str] | None = None
) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={upload_tag(upload_id): upload_id, **(extra_tags or {})})))


def uploads_of(run: dg.DagsterRun) -> list[str]:
    """The uploads a scoring run works on (UI re-executions keep the run config, maybe not the tags)."""
    tagged = [value for key, value in run.tags.items() if key.startswith(UPLOAD_TAG_PREFIX)]
    if tagged:
        return tagged
    if UPLOAD_ID_TAG in run.tags:
        return [run.tags[UPLOAD_ID_TAG]]
    ops = (run.run_config or {}).get("ops", {})
    if "list_uploads" in ops:
        return [u["upload_id"] for u in ops["list_uploads"].get("config", {}).get("uploads", [])]
    upload_id = ops.get("score_file", {}).get("config", {}).get("upload_id")
    return [upload_id] if upload_id else []


def run_config(message: UploadMessage) -> dg.RunConfig:
    return dg.RunConfig(ops={"score_file": {"config": upload_config(message)}})


def run_tags(message: UploadMessage) -> dict[str, str]:
    return {
        UPLOAD_ID_TAG: message.upload_id,
        ORIGINAL_NAME_TAG: message.original_name[:200],
        upload_tag(message.upload_id): message.upload_id,
        UPLOAD_BYTES_TAG: str(message.size),
    }


def backlog_run_config(messages: Sequence[UploadMessage]) -> dg.RunConfig:
    return dg.RunConfig(ops={"list_uploads": {"config": {"uploads": [upload_config(m) for m in messages]}}})


def backlog_run_tags(messages: Sequence[UploadMessage]) -> dict[str, str]:
    return {
        UPLOAD_COUNT_TAG: str(len(messages)),
        UPLOAD_BYTES_TAG: str(sum(m.size for m in messages)),
        **{upload_tag(m.upload_id): m.upload_id for m in messages},
    }
