"""The upload page: ``GET /`` and its script and style sheet, shipped in the package (no CDN, no
build step), plus the form description the page builds its prediction form from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse

import aimq_serving
from aimq_serving import schema
from aimq_serving.api.deps import SettingsDep
from aimq_serving.api.errors import error_response
from aimq_serving.api.payloads import SAMPLE_ROWS

STATIC_DIR = Path(aimq_serving.__file__).resolve().parent / "static"
# The only files served: a request names one of these keys, never a path.
_ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
# Everything the page loads or calls is this server; no inline script can run.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Revalidated on every load (ETag): an upgraded server never runs with a stale script.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_HEADERS)


@router.get("/static/{name}")
async def asset(name: str) -> Any:
    media = _ASSETS.get(name)
    if media is None:
        return error_response(404, f"no static file {name!r}")
    return FileResponse(STATIC_DIR / name, media_type=media, headers=_HEADERS)


def form_fields() -> list[dict[str, Any]]:
    """The record's fields in the sample files' column order, from the one feature schema."""
    fields: list[dict[str, Any]] = []
    for name in schema.INPUT_COLUMNS:
        if name == schema.GROUP_FIELD:
            fields.append(
                {
                    "name": name,
                    "kind": "choice",
                    "values": list(schema.MODEL_GROUPS),
                    "description": "model group: which model prices the car",
                }
            )
        elif name in schema.CATEGORICAL_BY_NAME:
            spec = schema.CATEGORICAL_BY_NAME[name]
            fields.append(
                {"name": name, "kind": "choice", "values": list(spec.values), "description": spec.description}
            )
        else:
            num = schema.NUMERIC_BY_NAME[name]
            fields.append(
                {
                    "name": name,
                    "kind": "integer",
                    "minimum": num.minimum,
                    "maximum": num.maximum,
                    "description": num.description,
                }
            )
    return fields


@router.get("/ui/config")
async def config(settings: SettingsDep) -> JSONResponse:
    return JSONResponse(
        {
            "fields": form_fields(),
            "example": SAMPLE_ROWS[0],
            "max_upload_bytes": settings.max_upload_bytes,
            "dagster_ui_url": settings.dagster_ui_url.rstrip("/"),
        },
        headers={"Cache-Control": "no-cache"},
    )
