"""The queue message announcing a stored upload: the contract between the API and the sensor.

Body (JSON, UTF-8), published persistent to the uploads exchange with routing key = queue name::

    {"version": 1, "upload_id": "<32 hex>", "format": "xlsx" | "csv", "sha256": "<64 hex>",
     "size": <bytes>, "original_name": "<client's file name>", "created_at": "<ISO 8601 UTC>"}

Unknown fields are ignored (so a newer publisher can add some); a missing or malformed field makes
the message invalid, and the sensor dead-letters it with the reason. Where the upload is stored
follows from its id and format alone (``UploadStorage.input_path``): the ``stored_path`` that
version-1 messages of earlier APIs also carry is ignored like any unknown field, so messages still
queued across a deploy are scored.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aimq_serving.uploads.storage import UPLOAD_ID_PATTERN
from aimq_tabular.formats import Format

MESSAGE_VERSION = 1


class InvalidMessage(ValueError):
    """The message cannot be processed; ``reason`` is stored with it in the dead-letter queue."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class UploadMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: Literal[1] = MESSAGE_VERSION
    upload_id: str = Field(pattern=UPLOAD_ID_PATTERN)
    format: Format
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=1)
    original_name: str = Field(max_length=255)
    created_at: datetime

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def parse(cls, body: bytes) -> UploadMessage:
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidMessage(f"body is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidMessage(f"body must be a JSON object, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}" for err in exc.errors()
            )
            raise InvalidMessage(f"invalid upload message: {problems}") from exc
