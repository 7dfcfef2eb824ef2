"""Online price predictions: one record or a batch, priced by the current model of its group."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from aimq_serving import schema
from aimq_serving.api import deps, payloads
from aimq_serving.api.errors import ErrorBody
from aimq_serving.api.payloads import Prediction
from aimq_serving.api.predictor import Route

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "unknown model group"},
    413: {"model": ErrorBody, "description": "request body over AIMQ_MAX_BODY_BYTES"},
    422: {
        "model": ErrorBody,
        "description": "a field is missing, extra, of the wrong type, out of range, or a "
        "category the group's model does not know (`allowed` lists the values it does)",
    },
    429: {"model": ErrorBody, "description": "rate limit exceeded; see Retry-After"},
    503: {
        "model": ErrorBody,
        "description": "no model for the group yet, Redis unreachable, or (/predict/pickle) "
        "the scikit-learn queue is full (AIMQ_PICKLE_QUEUE_ROWS); see Retry-After",
    },
}
_DESCRIPTION = (
    "Send one record (a JSON object with the 12 fields of the sample files) for one prediction, or a "
    "JSON array of records (at most {max_batch} records) for one prediction per record, in order."
)


# The one-record answer, formatted directly (json.dumps of a dict costs several times more); a
# price is a finite float, whose repr is valid JSON, and a group one of the known ones.
_ONE = b'{"predicted_price": %r, "model_group": %s, "model_version": %d}'
_GROUP_JSON = {g: json.dumps(g).encode() for g in schema.MODEL_GROUPS}


async def _body(request: Request) -> bytes:
    """The body, read straight from the ASGI channel rather than through ``Request.body()``'s
    stream generator."""
    message = await request.receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnect()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while message.get("more_body", False):
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


def build_router(max_batch_size: int) -> APIRouter:
    router = APIRouter(tags=["predict"])
    common: dict[str, Any] = {
        "response_model": Prediction | list[Prediction],
        "responses": _ERRORS,
        "openapi_extra": payloads.request_body_openapi(max_batch_size),
        "description": _DESCRIPTION.format(max_batch=max_batch_size),
    }

    async def predict(request: Request, route: Route) -> Response:
        # The body is parsed here rather than by a FastAPI body parameter: that path costs more
        # than the prediction itself (~25-30 us per request, measured). Same pydantic types, same 422s.
        try:
            parsed = payloads.parse_predict_body(await _body(request))
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None
        batch = isinstance(parsed, list)
        records = parsed if batch else (parsed,)
        if len(records) > max_batch_size:
            raise RequestValidationError(
                [
                    {
                        "loc": (),
                        "type": "too_long",
                        "msg": (
                            f"a batch holds at most {max_batch_size} records, this one has {len(records)} "
                            "(AIMQ_MAX_BATCH_SIZE)"
                        ),
                    }
                ]
            )
        # The dependency called directly rather than declared as a parameter, for the reason the body
        # is parsed here: FastAPI would resolve it per request through its dependency machinery (a
        # recursive solve, cache keys, callable checks), on the path docs/api.md counts in microseconds.
        predictor = await deps.predictor(request)
        results = await predictor.predict(records, route, batch)
        if not batch:
            price, group, version = results[0]
            return Response(_ONE % (price, _GROUP_JSON[group], version), media_type="application/json")
        rows = [{"predicted_price": p, "model_group": g, "model_version": v} for p, g, v in results]
        return Response(json.dumps(rows).encode(), media_type="application/json")

    @router.post(
        "/predict/onnx", summary="Predict with the ONNX model (ONNX Runtime, or RedisAI if configured)", **common
    )
    async def predict_onnx(request: Request) -> Response:
        return await predict(request, "onnx")

    @router.post("/predict/pickle", summary="Predict with the signed scikit-learn pickle", **common)
    async def predict_pickle(request: Request) -> Response:
        return await predict(request, "pickle")

    @router.post("/predict", summary="Predict on the fastest path (same as /predict/onnx)", **common)
    async def predict_default(request: Request) -> Response:
        return await predict(request, "onnx")

    return router
