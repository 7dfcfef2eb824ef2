"""App factory: ``create_app()``; run with ``python -m aimq_serving.api [--workers N]`` or
``uvicorn --factory aimq_serving.api.app:create_app`` (with ``--workers N``, set
``PROMETHEUS_MULTIPROC_DIR``: see aimq_serving/api/metrics.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from aimq_serving.api import errors
from aimq_serving.api.auth import ApiKeyMiddleware, ApiKeyRing, ApiKeys, document_security
from aimq_serving.api.intake.service import UploadServices
from aimq_serving.api.metrics import ApiMetrics
from aimq_serving.api.middleware import BodySizeLimitMiddleware, MetricsMiddleware, RateLimitMiddleware
from aimq_serving.api.ratelimit import RateLimiter
from aimq_serving.api.routers import health, metrics, models, predict, ui, uploads
from aimq_serving.api.services import Services
from aimq_serving.settings import AimqSettings

log = logging.getLogger(__name__)

DESCRIPTION = """Price predictions from the models the AIMQ pipeline trains and promotes.

Every error is JSON: `{"detail": ..., "errors": [{"field", "message", "row", "allowed"}]}`.
"""


def configure_access_log(enabled: bool) -> None:
    """AIMQ_ACCESS_LOG, applied by the app whatever command line started it (``aimq up``, compose,
    Kubernetes and ``python -m aimq_serving.api`` all get the same): off, uvicorn's access logger
    loses its handlers exactly as with ``--no-access-log``, and uvicorn, which checks
    ``hasHandlers()`` once per connection, then skips even formatting the line. On, uvicorn's own
    configuration stands (``--no-access-log`` on the command line still wins)."""
    if not enabled:
        access = logging.getLogger("uvicorn.access")
        access.handlers = []
        access.propagate = False


def create_app(settings: AimqSettings | None = None) -> FastAPI:
    settings = settings or AimqSettings()
    configure_access_log(settings.access_log)  # uvicorn configured its loggers before calling the factory
    api_keys = ApiKeys.from_settings(settings)  # a bad key configuration stops the start here
    api_metrics = ApiMetrics()
    limiter = (
        RateLimiter(
            settings.redis_url,
            settings.redis_prefix,
            settings.rate_limit_requests,
            settings.rate_limit_window_s,
            settings.redis_timeout_s,
        )
        if settings.rate_limit_enabled
        else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if limiter is not None:
            await limiter.start()
        app.state.services = Services.start(settings, api_metrics, limiter)
        app.openapi()  # built once now, not by the first /docs visitor or rejected request
        try:
            yield
        finally:
            await app.state.services.aclose()

    app = FastAPI(title="AIMQ", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    errors.install(app)
    if api_keys is not None:
        document_security(app)
        log.info("API keys required (%d configured: %s)", len(api_keys.names), ", ".join(api_keys.names))
    # Routes are matched in order, so the hot path comes first.
    app.include_router(predict.build_router(settings.max_batch_size, settings.coverage))
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(metrics.router)
    app.include_router(uploads.router)
    app.include_router(ui.router)  # the upload page at /
    # Added innermost first: metrics see every answer, including 413s and 429s.
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        path_limits={"/upload": UploadServices.body_limit(settings)},
    )
    if limiter is not None:
        app.add_middleware(RateLimitMiddleware, limiter=limiter, key_header=settings.rate_limit_key_header)
    if api_keys is not None:
        # Outside the rate limit, which keys an authenticated request by the key's name.
        app.add_middleware(ApiKeyMiddleware, keys=ApiKeyRing(settings, api_keys), limiter=limiter)
    app.add_middleware(MetricsMiddleware, metrics=api_metrics)
    return app
