"""Online price predictions: one record or a batch, priced by the current model of its group."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from aimq_serving import schema
from aimq_serving.api import deps, payloads
from aimq_serving.api.errors import ErrorBody
from aimq_serving.api.payloads import Prediction
from aimq_serving.api.predictor import Priced, Route
from aimq_serving.conformal import MAX_COVERAGE, MIN_COVERAGE, NO_CALIBRATION
from aimq_serving.reference import NO_REFERENCE

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
# price is a finite float, whose repr is valid JSON, a group one of the known ones and a model id hex.
# A version without calibration or reference (stored before issue 25) is answered by ``_item``.
_ONE = (
    b'{"predicted_price": %r, "price_low": %r, "price_high": %r, "coverage": %r, '
    b'"model_group": %s, "model_version": %d, "model_id": "%s", "out_of_range": %s}'
)
_GROUP_JSON = {g: json.dumps(g).encode() for g in schema.MODEL_GROUPS}
_COVERAGE_PARAMETER = {
    "name": "coverage",
    "in": "query",
    "required": False,
    "description": f"the range's coverage, a fraction from {MIN_COVERAGE} to {MAX_COVERAGE} (default: AIMQ_COVERAGE)",
    "schema": {"type": "number", "minimum": MIN_COVERAGE, "maximum": MAX_COVERAGE},
}


def _item(priced: Priced, coverage: float) -> dict[str, Any]:
    """One answer as JSON-ready data, with the notes of what its version lacks."""
    price, low, high, group, version, model_id, flagged = priced
    item: dict[str, Any] = {
        "predicted_price": price,
        "price_low": low,
        "price_high": high,
        "coverage": coverage,
        "model_group": group,
        "model_version": version,
        "model_id": model_id,
        "out_of_range": flagged,
    }
    if low is None:
        item["range_note"] = NO_CALIBRATION
    if flagged is None:
        item["out_of_range_note"] = NO_REFERENCE
    return item


def _coverage(request: Request, default: float) -> float:
    """The request's ``?coverage=``, else ``default``; a 422 naming the allowed range otherwise."""
    if not request.scope.get("query_string"):  # the common case, without parsing a query
        return default
    raw = request.query_params.get("coverage")
    if raw is None:
        return default
    try:
        level = float(raw)
    except ValueError:
        level = math.nan
    if not MIN_COVERAGE <= level <= MAX_COVERAGE:  # NaN fails too
        raise RequestValidationError(
            [
                {
                    "loc": ("query", "coverage"),
                    "type": "value_error",
                    "msg": f"coverage must be a number from {MIN_COVERAGE} to {MAX_COVERAGE} (0.9 is a 90 % range); "
                    f"got {raw[:40]!r}",
                }
            ]
        )
    return level


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


def build_router(max_batch_size: int, default_coverage: float) -> APIRouter:
    router = APIRouter(tags=["predict"])
    common: dict[str, Any] = {
        "response_model": Prediction | list[Prediction],
        "responses": _ERRORS,
        "openapi_extra": {**payloads.request_body_openapi(max_batch_size), "parameters": [_COVERAGE_PARAMETER]},
        "description": _DESCRIPTION.format(max_batch=max_batch_size),
    }

    async def predict(request: Request, route: Route) -> Response:
        # The body is parsed here rather than by a FastAPI body parameter: that path costs more
        # than the prediction itself (~25-30 us per request, measured). Same pydantic types, same 422s.
        try:
            parsed = payloads.parse_predict_body(await _body(request))
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None
        coverage = _coverage(request, default_coverage)
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
        results = await predictor.predict(records, route, batch, coverage)
        if not batch:
            price, low, high, group, version, model_id, flagged = results[0]
            if low is None or flagged is None:
                return Response(json.dumps(_item(results[0], coverage)).encode(), media_type="application/json")
            names = json.dumps(flagged).encode() if flagged else b"[]"
            body = _ONE % (price, low, high, coverage, _GROUP_JSON[group], version, model_id.encode(), names)
            return Response(body, media_type="application/json")
        rows = [_item(priced, coverage) for priced in results]
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
