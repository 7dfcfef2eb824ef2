"""The scoring job: read an upload, score every valid row, write the result, report progress.

Failures are sorted by what a retry can fix:

- bad input (unreadable file, missing columns, too many rows, checksum mismatch) and a model whose
  signature fails: the upload is marked failed with the reason and the op raises
  ``dg.Failure(allow_retries=False)``: no op retry, and no run retry either (dagster.yaml has
  ``retry_on_asset_or_op_failure: false``);
- anything else (Redis, storage, broker hiccups) is retried by the op's policy, with exponential
  backoff and jitter; the last attempt marks the upload failed before giving up;
- a crashed run process is retried as a whole by run retries (dagster.yaml), and the run-failure
  sensor marks the upload failed once no retry follows (``aimq_pipelines/sensors.py``).

A failed upload is rerun by re-executing its run in the Dagster UI: the run config holds the
upload's message, and the rerun takes the upload back to ``running``.

The run first claims the upload's input: a body the API left in ``incoming/`` (killed between the
broker's confirm and the move) is moved into place. No body and no status record means the upload
was never acknowledged (the API answered 503, or died first): the run ends without scoring and
without creating a record, since no client holds that id.
"""

import dagster as dg
from pydantic import ValidationError

from aimq_pipelines.resources import ModelStoreResource
from aimq_pipelines.scoring.resources import UploadsResource
from aimq_serving.model_store import TamperedModel
from aimq_serving.predictor import ModelCache
from aimq_serving.uploads.messages import UploadMessage
from aimq_serving.uploads.scoring import BadInput, PinnedModels, estimate_data_rows, score_file
from aimq_serving.uploads.status import StatusUnavailable, UploadStatusStore
from aimq_serving.uploads.storage import sha256_file

UPLOAD_ID_TAG = "aimq/upload_id"
ORIGINAL_NAME_TAG = "aimq/original_name"

RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=2.0, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


class ScoreUploadConfig(dg.Config):
    """The upload's queue message (``aimq_serving.uploads.messages.UploadMessage``)."""

    upload_id: str
    stored_path: str
    format: str
    sha256: str
    size: int
    original_name: str
    created_at: str

    @classmethod
    def from_message(cls, message: UploadMessage) -> "ScoreUploadConfig":
        return cls(**{**message.model_dump(exclude={"version"}), "created_at": message.created_at.isoformat()})

    def message(self) -> UploadMessage:
        return UploadMessage.model_validate(self.model_dump())


@dg.op(name="score_file", retry_policy=RETRY_POLICY, description="Score one uploaded file with the served models.")
def score_file_op(
    context: dg.OpExecutionContext,
    config: ScoreUploadConfig,
    uploads: UploadsResource,
    model_store: ModelStoreResource,
) -> dg.Output[None]:
    try:
        message = config.message()
    except ValidationError as exc:  # a hand-written run config (launchpad): no retry fixes it
        raise dg.Failure(description=f"invalid upload in the run config: {exc}", allow_retries=False) from exc
    settings = uploads.settings()
    storage = uploads.storage()
    status = uploads.status_store()
    upload_id = message.upload_id
    source = storage.claim_input(upload_id, message.format)
    if source is None and status.get(upload_id) is None:
        # No file and no record: the API removed the body after answering 503 (a confirm it
        # gave up on reached the broker anyway), or died before accepting it. No client holds
        # this id, so there is nothing to score and nothing to report.
        context.log.info(f"upload {upload_id} was withdrawn before it was accepted: nothing to score")
        return dg.Output(None, metadata={"upload_id": upload_id, "withdrawn": True})
    status.start(message, context.run_id)
    context.log.info(f"scoring upload {upload_id} ({message.original_name!r}, {message.size:,} bytes, {message.format})")

    def progress(rows_done: int, rows_rejected: int) -> None:
        context.log.info(f"upload {upload_id}: {rows_done:,} rows done, {rows_rejected:,} rejected")
        try:
            status.progress(upload_id, rows_done, rows_rejected)
        except StatusUnavailable as exc:  # progress is informative; the final state is what counts
            context.log.warning(f"could not record progress: {exc}")

    try:
        if source is None or not source.is_file():
            raise BadInput("the uploaded file is no longer stored (it was removed, or its upload was refused)")
        if sha256_file(source) != message.sha256:
            raise BadInput("the stored file does not match the checksum taken at upload; upload it again")
        rows_expected = estimate_data_rows(source, message.format)
        if rows_expected is not None:
            context.log.info(f"upload {upload_id}: about {rows_expected:,} data rows")
            try:
                status.expect(upload_id, rows_expected)
            except StatusUnavailable as exc:
                context.log.warning(f"could not record the expected row count: {exc}")
        models = PinnedModels.from_cache(ModelCache(model_store.store()))
        context.log.info(
            "models: " + ", ".join(f"{g} v{m.version}" for g, m in models.models.items())
            + "".join(f"; {g}: {why}" for g, why in models.unavailable.items())
        )
        result = score_file(
            source,
            message.format,
            result_path=storage.result_path(upload_id, message.format),
            rejected_path=storage.rejected_path(upload_id),
            models=models,
            max_rows=settings.max_upload_rows,
            chunk_rows=settings.scoring_chunk_rows,
            work_dir=storage.work_dir(upload_id),
            progress=progress,
        )
    except (BadInput, TamperedModel) as exc:
        status.fail(upload_id, str(exc))
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
    )
    context.log.info(
        f"upload {upload_id} scored: {result.rows_total:,} rows, {result.rows_rejected:,} rejected, stats {result.stats}"
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


def run_config(message: UploadMessage) -> dg.RunConfig:
    return dg.RunConfig(ops={"score_file": ScoreUploadConfig.from_message(message)})


def run_tags(message: UploadMessage) -> dict[str, str]:
    return {UPLOAD_ID_TAG: message.upload_id, ORIGINAL_NAME_TAG: message.original_name[:200]}
