"""The model versions in the store and the ones this server has loaded."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from aimq_serving import schema
from aimq_serving.api.deps import ServicesDep
from aimq_serving.api.errors import ErrorBody

router = APIRouter(tags=["models"])


class Version(BaseModel):
    version: int
    current: bool
    created_at: datetime
    metrics: dict[str, Any] = Field(description="holdout metrics of the training run (r2, mae, mape, ...)")
    lineage: dict[str, Any] = Field(description="Dagster run, data hash and source, sklearn version, estimator")
    spec_version: str
    onnx_bytes: int
    pickle_bytes: int
    redisai: bool = Field(description="also stored as a RedisAI model")


class Group(BaseModel):
    current: int | None = Field(description="the version the store marks current")
    loaded: int | None = Field(description="the version this server process is serving")
    versions: list[Version]


class ModelsResponse(BaseModel):
    groups: dict[str, Group]


@router.get(
    "/models",
    response_model=ModelsResponse,
    summary="Model groups, their versions, which is current, metrics and creation time",
    responses={503: {"model": ErrorBody, "description": "the model store (Redis) cannot be reached"}},
)
def list_models(services: ServicesDep) -> ModelsResponse:
    # A plain def: it reads Redis, which must not stall the event loop.
    groups = {}
    for group in schema.MODEL_GROUPS:
        infos = services.store.list_versions(group)
        loaded = services.models.peek(group)
        current = next((i.version for i in infos if i.current), None)
        versions = [
            Version(
                **{k: v for k, v in info.as_dict().items() if k not in ("group", "created_at")},
                created_at=datetime.fromtimestamp(info.created_at, tz=UTC),
            )
            for info in infos
        ]
        groups[group] = Group(current=current, loaded=loaded.version if loaded else None, versions=versions)
    return ModelsResponse(groups=groups)
