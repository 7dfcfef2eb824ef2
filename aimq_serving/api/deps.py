"""FastAPI dependencies: handlers ask for what they use instead of reaching into app.state."""

from __future__ import annotations

from fastapi import Request

from aimq_serving.api.services import Services
from aimq_serving.model_store import ModelStore
from aimq_serving.predictor import ModelCache
from aimq_serving.settings import AimqSettings


def services(request: Request) -> Services:
    return request.app.state.services


def settings(request: Request) -> AimqSettings:
    return request.app.state.services.settings


def store(request: Request) -> ModelStore:
    return request.app.state.services.store


def models(request: Request) -> ModelCache:
    return request.app.state.services.models
