"""Where uploads and their results live on disk.

Layout under the root (``AIMQ_UPLOAD_DIR``, default ``data_dir/uploads``)::

    incoming/<id>.part              while the API receives the body and until the broker confirmed
                                    its message (then moved into place)
    <id[:2]>/<id>/input.<xlsx|csv>  the upload, as received (never changed afterwards)
    <id[:2]>/<id>/result.<xlsx|csv> the scored file (written to a temporary name, then renamed)
    <id[:2]>/<id>/rejected.csv      rejected rows with their reasons
    <id[:2]>/<id>/about.json        the result's provenance (upload, models, when)
    <id[:2]>/<id>/work/             scratch space of a scoring run

Paths are built from the upload id only (32 hex characters, checked): the client's file name is
metadata and never part of a path.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from aimq_tabular.formats import FORMATS, Format

# What an upload id looks like (uuid4().hex): the API's path parameter and the queue message check it too.
UPLOAD_ID_PATTERN = r"^[0-9a-f]{32}$"
_ID = re.compile(UPLOAD_ID_PATTERN)


class InvalidUploadId(ValueError):
    pass


def new_upload_id() -> str:
    return uuid.uuid4().hex


def check_upload_id(upload_id: str) -> str:
    if not isinstance(upload_id, str) or not _ID.match(upload_id):
        raise InvalidUploadId(f"invalid upload id {upload_id!r}: expected 32 lowercase hex characters")
    return upload_id


class UploadStorage:
    def __init__(self, root: Path):
        self.root = Path(root)

    def directory(self, upload_id: str) -> Path:
        check_upload_id(upload_id)
        return self.root / upload_id[:2] / upload_id

    def input_path(self, upload_id: str, fmt: Format) -> Path:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}")
        return self.directory(upload_id) / f"input.{fmt}"

    def result_path(self, upload_id: str, fmt: Format) -> Path:
        return self.directory(upload_id) / f"result.{fmt}"

    def rejected_path(self, upload_id: str) -> Path:
        return self.directory(upload_id) / "rejected.csv"

    def about_path(self, upload_id: str) -> Path:
        return self.directory(upload_id) / "about.json"

    def work_dir(self, upload_id: str) -> Path:
        path = self.directory(upload_id) / "work"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def incoming_path(self, upload_id: str) -> Path:
        check_upload_id(upload_id)
        path = self.root / "incoming"
        path.mkdir(parents=True, exist_ok=True)
        return path / f"{upload_id}.part"

    def commit_incoming(self, upload_id: str, fmt: Format) -> Path:
        """Move a completely received body into place (atomic: same file system).

        The API does this once the broker confirmed the upload's message; a scoring run that
        starts first does it too (``claim_input``), so whichever comes second finds it done.
        """
        target = self.input_path(upload_id, fmt)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(self.incoming_path(upload_id), target)
        except FileNotFoundError:
            if not target.is_file():
                raise
        return target

    def claim_input(self, upload_id: str, fmt: Format) -> Path | None:
        """The stored input of a queued upload, or None if it is gone (the upload was withdrawn).

        A message exists only for a completely received body, so a body still in ``incoming/``
        is complete: its API was killed (or is slow) between the broker's confirm and the move.
        """
        target = self.input_path(upload_id, fmt)
        if not target.is_file() and self.incoming_path(upload_id).is_file():
            try:
                self.commit_incoming(upload_id, fmt)
            except FileNotFoundError:  # removed meanwhile (the API answered 503)
                pass
        return target if target.is_file() else None

    def sweep_incoming(self, older_than_s: float, keep: Callable[[str], bool] = lambda upload_id: False) -> list[str]:
        """Remove incoming bodies not written to for ``older_than_s`` seconds, except those whose
        upload id ``keep`` names; their ids.

        Such a body belongs to a request that never got its 202 (the API died, or the client
        stopped sending): no one will move it into place, and no client knows its id.
        """
        folder = self.root / "incoming"
        removed: list[str] = []
        cutoff = time.time() - older_than_s
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return removed
        for entry in entries:
            if not entry.name.endswith(".part"):
                continue
            try:
                if entry.stat().st_mtime < cutoff and not keep(entry.name.removesuffix(".part")):
                    os.unlink(entry.path)
                    removed.append(entry.name.removesuffix(".part"))
            except FileNotFoundError:  # moved into place or removed meanwhile
                continue
        return removed

    def delete(self, upload_id: str) -> None:
        self.incoming_path(upload_id).unlink(missing_ok=True)
        shutil.rmtree(self.directory(upload_id), ignore_errors=True)

    def clear_work(self, upload_id: str) -> None:
        shutil.rmtree(self.directory(upload_id) / "work", ignore_errors=True)
