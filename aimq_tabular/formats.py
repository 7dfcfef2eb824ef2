"""The file formats an upload can have, and the media type each is sent with."""

from __future__ import annotations

from typing import Literal, get_args

Format = Literal["xlsx", "csv"]
FORMATS: tuple[Format, ...] = get_args(Format)
MEDIA_TYPES: dict[Format, str] = {
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv",
}
