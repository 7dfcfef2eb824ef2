"""Every error the API answers is JSON saying what is wrong and where: ``ErrorBody``.

Store errors map to statuses here, once: an unknown group is the caller's mistake (404); no model yet,
an unreachable Redis or a version whose signature fails are the server's state (503, retry later).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from aimq_serving import schema, values
from aimq_serving.api.sklearn_batcher import Overloaded
from aimq_serving.features import EncodingError
from aimq_serving.model_store import ModelStoreError, NoModel, StoreUnavailable, TamperedModel, UnknownGroup

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499
# Seconds a client should wait before retrying a 503 caused by the server's state.
RETRY_AFTER_UNAVAILABLE_S = 1
_LOC_SOURCES = {"body", "query", "path", "header", "cookie"}
_BODY_TAGS = {"record", "batch"}


class FieldError(BaseModel):
    field: str | None = Field(None, description="the offending field; null when the body as a whole is wrong")
    message: str
    row: int | None = Field(None, description="0-based position in a batch; absent for a single record")
    allowed: list[Any] | None = Field(None, description="the values the field accepts (categories)")


class ErrorBody(BaseModel):
    """The body of every error answer of the API (but /ready's 503, which is its Readiness)."""

    detail: str
    errors: list[FieldError] | None = None
    limit_bytes: int | None = Field(None, description="413: the size limit the body or file exceeded")
    retry_after_s: int | None = Field(None, description="429: seconds until the rate limit lets a request through")


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        self.limit = limit
        super().__init__(f"request body exceeds the limit of {limit} bytes")


def error_response(
    status: int,
    detail: str,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail}
    if errors is not None:
        body["errors"] = list(errors)
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


def too_large_body(limit: int) -> dict[str, Any]:
    return {"detail": f"request body exceeds the limit of {limit} bytes (AIMQ_MAX_BODY_BYTES)", "limit_bytes": limit}


def _allowed_values(field: str | None) -> list[Any] | None:
    if field in schema.CATEGORICAL_BY_NAME:
        return list(schema.CATEGORICAL_BY_NAME[field].values)
    return None


def field_errors(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors as ``{row, field, message, allowed}``: the location without its plumbing
    (``body``, the union tag), the batch position as ``row``, and the accepted values of a category."""
    out: list[dict[str, Any]] = []
    for err in errors:
        row: int | None = None
        field: str | None = None
        for part in err.get("loc", ()):
            if isinstance(part, int):
                row = part
            elif part not in _LOC_SOURCES and part not in _BODY_TAGS:
                field = part
        item: dict[str, Any] = {"field": field}
        kind = err.get("type", "")
        if field in schema.FEATURE_FIELDS and kind not in ("missing", "extra_forbidden"):
            # Worded as the batch job words a refused cell (aimq_serving/values.py).
            number = schema.NUMERIC_BY_NAME.get(field)
            bounds = (number.minimum, number.maximum) if number is not None else None
            item["message"] = values.reason(field, err.get("input"), bounds)
            if (allowed := _allowed_values(field)) is not None:
                item["allowed"] = allowed
        elif kind == "extra_forbidden":
            item["message"] = "unknown field; the record's fields are " + ", ".join(schema.INPUT_COLUMNS)
        else:
            item["message"] = err.get("msg", "invalid value")
        if row is not None:
            item["row"] = row
        out.append(item)
    return out


def encoding_errors(exc: EncodingError, batch: bool) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors:
        item = err.as_dict()
        if not batch:
            item.pop("row", None)
        out.append(item)
    return out


class RejectedRecords(Exception):
    """Records that passed the schema but not their model's feature spec (e.g. a category the
    group's model never saw in training)."""

    def __init__(self, error: EncodingError, batch: bool):
        self.error = error
        self.batch = batch


def install(app: FastAPI) -> None:
    """Register the app-wide exception handlers."""

    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid request", field_errors(exc.errors()))

    async def encoding(request: Request, exc: RejectedRecords) -> JSONResponse:
        return error_response(
            422, "a value is not accepted by the model of its group", encoding_errors(exc.error, exc.batch)
        )

    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse(too_large_body(exc.limit), status_code=413)

    async def unknown_group(request: Request, exc: UnknownGroup) -> JSONResponse:
        field = {"field": schema.GROUP_FIELD, "message": "unknown model group", "allowed": list(schema.MODEL_GROUPS)}
        return error_response(404, str(exc), [field])

    last_logged: list[str] = [""]

    async def store_error(request: Request, exc: ModelStoreError) -> JSONResponse:
        # Logged once per distinct problem, not once per request that runs into it; the store logs
        # a refused (tampered) version itself, wherever it is read.
        if not isinstance(exc, (NoModel, StoreUnavailable, TamperedModel)) and str(exc) != last_logged[0]:
            last_logged[0] = str(exc)
            log.error("model store error: %s", exc)
        return error_response(503, str(exc), headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)})

    async def redis_error(request: Request, exc: redis.RedisError) -> JSONResponse:
        # Only the RedisAI backend talks to Redis outside the store's own error mapping.
        log.warning("redis error on %s: %s", request.url.path, exc)
        return error_response(
            503, f"model execution in Redis failed: {exc}", headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)}
        )

    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return error_response(503, str(exc), headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)})

    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        # The client closed the connection before sending its whole body (a timeout, a load
        # generator stopping): nothing to answer and nothing wrong with the server. 499 is what
        # the metrics record ("client closed request"); the response goes nowhere.
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this answer, so the server logs the traceback once.
        return error_response(500, "internal error; the server log has the details")

    app.add_exception_handler(RequestValidationError, validation)  # type: ignore[arg-type]
    app.add_exception_handler(RejectedRecords, encoding)  # type: ignore[arg-type]
    app.add_exception_handler(BodyTooLarge, too_large)  # type: ignore[arg-type]
    app.add_exception_handler(UnknownGroup, unknown_group)  # type: ignore[arg-type]
    app.add_exception_handler(ModelStoreError, store_error)  # type: ignore[arg-type]
    app.add_exception_handler(redis.RedisError, redis_error)  # type: ignore[arg-type]
    app.add_exception_handler(Overloaded, overloaded)  # type: ignore[arg-type]
    app.add_exception_handler(ClientDisconnect, client_gone)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected)
    _document_validation_errors(app)


def error_body_ref(spec: dict[str, Any]) -> dict[str, str]:
    """The OpenAPI reference to ``ErrorBody`` in ``spec``, whose components get the schema if no
    route's documented answer put it there."""
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(body.pop("$defs", {}))
    components.setdefault("ErrorBody", body)
    return {"$ref": "#/components/schemas/ErrorBody"}


def _document_validation_errors(app: FastAPI) -> None:
    """FastAPI documents its own 422 body (``detail`` as a list) on every operation with parameters;
    the handler above answers ``ErrorBody`` instead, so the schema says that."""
    build = app.openapi
    default_ref = "#/components/schemas/HTTPValidationError"

    def openapi() -> dict[str, Any]:
        spec = build()
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        if "HTTPValidationError" not in components:
            return spec  # already rewritten
        error_body = error_body_ref(spec)
        for operations in spec.get("paths", {}).values():
            for operation in operations.values():
                response = operation.get("responses", {}).get("422", {})
                if response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref") == default_ref:
                    operation["responses"]["422"] = {
                        "description": (
                            "a parameter is missing, of the wrong type or out of range (`errors` says which)"
                        ),
                        "content": {"application/json": {"schema": error_body}},
                    }
        del components["HTTPValidationError"]
        components.pop("ValidationError", None)
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
