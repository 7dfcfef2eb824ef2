"""Liveness, readiness and a no-op round trip."""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from aimq_serving import schema
from aimq_serving.api.deps import ServicesDep
from aimq_serving.api.services import Services
from aimq_serving.loaded_models import LoadedModel
from aimq_serving.model_store import ModelStoreError

router = APIRouter(tags=["health"])


class Status(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    redis: str
    models: dict[str, int | None]
    problems: dict[str, str]


@router.get("/health", response_model=Status, summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok"}


_PING_DOC = (
    "Does nothing, through the same middleware as a prediction (rate limit, metrics, body-size "
    "limit): the floor a client measures its round trip against. Counts against the rate limit. "
    "POST accepts and ignores a body, so a client can send the very request it sends to /predict."
)


@router.get("/ping", response_model=Status, summary="No-op round trip", description=_PING_DOC)
async def ping() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/ping", response_model=Status, summary="No-op round trip with a body", description=_PING_DOC)
async def ping_with_body() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    response_model=Readiness,
    summary="Readiness: Redis answers and every group's current model is loaded",
    responses={503: {"model": Readiness, "description": "not ready; `problems` says why"}},
)
def ready(services: ServicesDep) -> JSONResponse:
    # A plain def: the Redis ping may wait for its timeout, and must not stall the event loop.
    problems: dict[str, str] = {}
    try:
        services.store.client.ping()
        redis_state = "ok"
    except (redis.RedisError, OSError) as exc:
        redis_state = "unavailable"
        problems["redis"] = f"model store unavailable (Redis): {exc}"
    loaded = services.models.loaded()
    versions: dict[str, Any] = {}
    for group in schema.MODEL_GROUPS:
        model = loaded.get(group)
        versions[group] = model.version if model is not None else None
        if model is None:
            problems[group] = services.models.last_error(group) or "no model loaded yet"
        elif services.settings.predict_backend == "redisai" and redis_state == "ok":
            problem = _redisai_problem(services, model)
            if problem:
                problems[group] = problem
    body = Readiness(ready=not problems, redis=redis_state, models=versions, problems=problems)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


def _redisai_problem(services: Services, model: LoadedModel) -> str | None:
    """Why /predict/onnx cannot run ``model`` in RedisAI now, if it cannot."""
    if not model.info.redisai:
        return (
            f"version {model.version} is not stored in RedisAI (the Redis server has no ai module, "
            "or the Redis URL is not on database 0)"
        )
    try:
        if services.store.redisai_model_exists(model.group, model.version):
            return None
    except ModelStoreError as exc:
        return str(exc)
    return (
        f"RedisAI has no model for version {model.version} (restarted without persistence?); "
        "the API stores it again from the signed record within a few seconds"
    )
