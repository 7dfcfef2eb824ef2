"""Prometheus exposition."""

from __future__ import annotations

from fastapi import APIRouter, Response

from aimq_serving.api.deps import MetricsDep
from aimq_serving.api.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="Request counts and latency by endpoint and status, predictions by group and version, model loads.",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {}}}},
)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.exposition(), media_type=CONTENT_TYPE)
