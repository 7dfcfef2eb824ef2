"""FastAPI dependencies: handlers ask for what they use instead of reaching into app.state.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, which
costs more than a whole one-row prediction.
"""

from __future__ import annotations

from fastapi import Request

from aimq_serving.api.metrics import ApiMetrics
from aimq_serving.api.predictor import OnlinePredictor
from aimq_serving.api.services import Services
from aimq_serving.loaded_models import ModelCache
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings


async def services(request: Request) -> Services:
    return request.app.state.services


async def settings(request: Request) -> AimqSettings:
    return request.app.state.services.settings


async def store(request: Request) -> ModelStore:
    return request.app.state.services.store


async def models(request: Request) -> ModelCache:
    return request.app.state.services.models


async def predictor(request: Request) -> OnlinePredictor:
    return request.app.state.services.predictor


async def metrics(request: Request) -> ApiMetrics:
    return request.app.state.services.metrics
