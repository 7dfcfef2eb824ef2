"""Batch scoring: upload an xlsx or CSV file, follow its scoring run, download the result."""

from __future__ import annotations

import json
import os
import threading
import zipfile
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from aimq_serving.api.deps import UploadServicesDep
from aimq_serving.api.errors import RETRY_AFTER_UNAVAILABLE_S, BodyTooLarge, ErrorBody, error_response
from aimq_serving.api.intake.receive import FIELD, UploadRejected
from aimq_serving.api.intake.service import UploadNotQueued, UploadServices
from aimq_serving.uploads.status import State, StatusUnavailable, UploadRecord
from aimq_serving.uploads.storage import UPLOAD_ID_PATTERN
from aimq_tabular.formats import MEDIA_TYPES

router = APIRouter(tags=["uploads"])

UploadId = Annotated[str, Path(pattern=UPLOAD_ID_PATTERN, description="the id returned by POST /upload")]


class UploadAccepted(BaseModel):
    upload_id: str
    state: Literal["queued"] = "queued"
    status_url: str
    result_url: str


class UploadStatus(UploadRecord):
    run_url: str | None = None
    result_url: str | None = None
    rejected_url: str | None = None
    about_url: str | None = None


class UploadList(BaseModel):
    uploads: list[UploadStatus]


_UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorBody, "description": "the file is larger than AIMQ_MAX_UPLOAD_BYTES"},
    415: {
        "model": ErrorBody,
        "description": "not multipart/form-data, or the file is not an xlsx workbook or UTF-8 CSV",
    },
    422: {"model": ErrorBody, "description": "no file field, several files, an empty or damaged file"},
    503: {"model": ErrorBody, "description": "the message broker did not confirm; nothing was kept, retry later"},
}


def _status(services: UploadServices, record: UploadRecord) -> UploadStatus:
    base = f"/uploads/{record.upload_id}"
    done = record.state == "succeeded"
    return UploadStatus(
        **record.model_dump(),
        run_url=services.run_url(record.run_id),
        result_url=f"{base}/result" if done else None,
        rejected_url=f"{base}/rejected" if done else None,
        about_url=f"{base}/about" if done else None,
    )


def _unavailable(exc: Exception) -> JSONResponse:
    return error_response(503, str(exc), headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)})


@router.post(
    "/upload",
    status_code=202,
    response_model=UploadAccepted,
    responses=_UPLOAD_ERRORS,
    summary="Upload an xlsx or CSV file of listings to be scored",
    description=(
        f"multipart/form-data with the file in a field named `{FIELD}`. The file needs the 12 columns of the "
        "sample files (other columns are kept). Answers 202 once the upload is stored and queued; follow "
        "`status_url` until `state` is `succeeded`, then download `result_url`."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [FIELD],
                        "properties": {FIELD: {"type": "string", "format": "binary"}},
                    }
                }
            },
        }
    },
)
async def upload(request: Request, services: UploadServicesDep) -> JSONResponse:
    try:
        message = await services.accept(request.stream(), request.headers.get("content-type"))
    except UploadRejected as exc:
        return JSONResponse(exc.body(), status_code=exc.status)
    except BodyTooLarge:
        # The body-size middleware counts the multipart framing too; the limit people set is the file's.
        limit = services.max_bytes
        return error_response(413, f"the file is larger than the limit of {limit:,} bytes (AIMQ_MAX_UPLOAD_BYTES)")
    except UploadNotQueued as exc:
        return _unavailable(Exception(f"the upload could not be queued and was not kept: {exc}"))
    status_url = f"/uploads/{message.upload_id}"
    body = UploadAccepted(upload_id=message.upload_id, status_url=status_url, result_url=f"{status_url}/result")
    return JSONResponse(body.model_dump(), status_code=202, headers={"Location": status_url})


@router.get("/uploads", response_model=UploadList, summary="Recent uploads, newest first")
async def list_uploads(
    services: UploadServicesDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    state: Annotated[State | None, Query(description="only uploads in this state")] = None,
) -> Any:
    try:
        records = await run_in_threadpool(services.status.recent, limit, state)
    except StatusUnavailable as exc:
        return _unavailable(exc)
    return UploadList(uploads=[_status(services, r) for r in records])


@router.get(
    "/uploads/{upload_id}",
    response_model=UploadStatus,
    responses={404: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    summary="State, progress, model versions and Dagster run of an upload",
)
async def get_upload(services: UploadServicesDep, upload_id: UploadId) -> Any:
    try:
        record = await run_in_threadpool(services.status.get, upload_id)
    except StatusUnavailable as exc:
        return _unavailable(exc)
    if record is None:
        return error_response(404, f"no upload with id {upload_id}")
    return _status(services, record)


async def _finished(services: UploadServices, upload_id: str) -> UploadRecord | JSONResponse:
    try:
        record = await run_in_threadpool(services.status.get, upload_id)
    except StatusUnavailable as exc:
        return _unavailable(exc)
    if record is None:
        return error_response(404, f"no upload with id {upload_id}")
    if record.state != "succeeded":
        why = f": {record.error}" if record.error else f" ({record.rows_done:,} rows done)"
        return error_response(409, f"upload {upload_id} is {record.state}, there is no result{why}")
    return record


_DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody},
    409: {"model": ErrorBody, "description": "not scored (yet)"},
}


@router.get(
    "/uploads/{upload_id}/result",
    response_class=FileResponse,
    responses=_DOWNLOAD_RESPONSES,
    summary="Download the scored file (same format as the upload), or a zip of it and its provenance",
    description=(
        "The scored file in the upload's format: an xlsx result holds its provenance in its `about` sheet. "
        "With `bundle=zip`, a zip of the scored file and `about.json` (the provenance; also at "
        "`/uploads/{id}/about`): the way to keep a CSV result's provenance with it."
    ),
)
async def get_result(
    services: UploadServicesDep,
    upload_id: UploadId,
    bundle: Annotated[
        Literal["zip"] | None, Query(description="`zip`: the scored file and about.json in one zip")
    ] = None,
) -> Any:
    return await _download(services, upload_id, "result", bundle=bundle)


class AboutModel(BaseModel):
    version: int
    model_id: str
    created_at: str
    onnx_sha256: str
    calibration_rows: int | None = None
    training_ranges: dict[str, list[int]] | None = None  # per numeric feature: [min, max] of the fitted rows


class About(BaseModel, extra="allow"):
    """A result's provenance (``aimq_pipelines/uploads/provenance.py``); results scored before it
    existed have none (404)."""

    upload_id: str | None
    original_name: str | None
    sha256: str | None
    data_sheet: str | None
    header_row: int
    models: dict[str, AboutModel]
    coverage: float
    aimq_version: str
    scored_at: str


def _no_about(upload_id: str) -> JSONResponse:
    return error_response(404, f"the provenance of upload {upload_id} is not stored (scored before AIMQ kept it)")


@router.get(
    "/uploads/{upload_id}/about",
    response_model=About,
    responses=_DOWNLOAD_RESPONSES,
    summary="The result's provenance: the upload, the sheet and header read, each group's model, when",
)
async def get_about(services: UploadServicesDep, upload_id: UploadId) -> Any:
    record = await _finished(services, upload_id)
    if isinstance(record, JSONResponse):
        return record
    path = services.storage.about_path(upload_id)
    if not path.is_file():
        return _no_about(upload_id)
    return JSONResponse(json.loads(await run_in_threadpool(path.read_bytes)))


@router.get(
    "/uploads/{upload_id}/rejected",
    response_class=FileResponse,
    responses=_DOWNLOAD_RESPONSES,
    summary="Download the rejected rows with their reasons (CSV)",
)
async def get_rejected(services: UploadServicesDep, upload_id: UploadId) -> Any:
    return await _download(services, upload_id, "rejected")


async def _download(services: UploadServices, upload_id: str, kind: str, bundle: str | None = None) -> Any:
    """A finished upload's ``result`` (in the upload's format, or zipped with its provenance) or
    ``rejected`` rows (CSV)."""
    record = await _finished(services, upload_id)
    if isinstance(record, JSONResponse):
        return record
    if kind == "result":
        path, fmt, what = services.storage.result_path(upload_id, record.format), record.format, "result"
    else:
        path, fmt, what = services.storage.rejected_path(upload_id), "csv", "rejected rows"
    if not path.is_file():
        return error_response(
            404, f"the {what} of upload {upload_id} {'are' if kind == 'rejected' else 'is'} no longer stored"
        )
    stem = record.original_name.rsplit(".", 1)[0].strip(" .") or "upload"
    name = f"{stem}_{'scored' if kind == 'result' else 'rejected'}.{fmt}"
    if bundle == "zip":
        about = services.storage.about_path(upload_id)
        if not about.is_file():
            return _no_about(upload_id)
        zipped = await run_in_threadpool(_bundle, path, about, name)
        zip_name = name.rsplit(".", 1)[0] + ".zip"
        return FileResponse(
            zipped, media_type="application/zip", headers={"Content-Disposition": content_disposition(zip_name)}
        )
    return FileResponse(path, media_type=MEDIA_TYPES[fmt], headers={"Content-Disposition": content_disposition(name)})


def _bundle(result: FilePath, about: FilePath, name: str) -> FilePath:
    """``result`` and ``about.json`` in one zip beside them, made on the first request for it (most
    users never ask; scoring stays as fast as before); written under a temporary name and renamed,
    so concurrent requests each see a complete zip."""
    target = result.with_name("result_bundle.zip")
    if not target.is_file():
        tmp = result.with_name(f".result_bundle.zip.{os.getpid()}.{threading.get_ident()}.tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as out:
            out.write(result, name)
            out.write(about, "about.json")
        os.replace(tmp, target)
    return target


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII ``filename`` every client understands and, when the name is not
    plain ASCII, the exact name as RFC 6266 ``filename*``. Neither can carry a quote, a line break
    or a path separator, so a client's file name can never add a header or pick a directory."""
    fallback = "".join(ch if " " <= ch <= "~" and ch not in '"\\/%;' else "_" for ch in filename)
    value = f'attachment; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value
