"""App factory: ``create_app()``; run with ``uvicorn --factory aimq_serving.api.app:create_app``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from aimq_serving.api.routers import health
from aimq_serving.api.services import Services
from aimq_serving.settings import AimqSettings


def create_app(settings: AimqSettings | None = None) -> FastAPI:
    settings = settings or AimqSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = Services.start(settings)
        try:
            yield
        finally:
            app.state.services.close()

    app = FastAPI(title="AIMQ", version="0.1.0", lifespan=lifespan)
    app.include_router(health.router)
    return app
