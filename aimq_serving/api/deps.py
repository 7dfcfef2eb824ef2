"""FastAPI dependencies: handlers ask for what they use instead of reaching into app.state.

A route declares a parameter of one of the ``...Dep`` types below; the function behind each alias
reads the app's ``Services`` (built by the app's lifespan, aimq_serving/api/services.py). Nothing
else in the API reads ``app.state``.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, which
costs more than a whole one-row prediction.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from aimq_serving.api.intake.service import UploadServices
from aimq_serving.api.metrics import ApiMetrics
from aimq_serving.api.predictor import OnlinePredictor
from aimq_serving.api.services import Services
from aimq_serving.settings import AimqSettings


async def services(request: Request) -> Services:
    return request.app.state.services


async def settings(request: Request) -> AimqSettings:
    return request.app.state.services.settings


async def predictor(request: Request) -> OnlinePredictor:
    # Called directly by the prediction handlers (aimq_serving/api/routers/predict.py says why), so
    # it has no alias.
    return request.app.state.services.predictor


async def metrics(request: Request) -> ApiMetrics:
    return request.app.state.services.metrics


async def uploads(request: Request) -> UploadServices:
    return request.app.state.services.uploads


ServicesDep = Annotated[Services, Depends(services)]
SettingsDep = Annotated[AimqSettings, Depends(settings)]
MetricsDep = Annotated[ApiMetrics, Depends(metrics)]
UploadServicesDep = Annotated[UploadServices, Depends(uploads)]
