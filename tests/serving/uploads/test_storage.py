"""Moving a received body into place, by the API or by the scoring run that starts first, and
sweeping bodies no request will ever finish."""

from __future__ import annotations

import os
import time
from pathlib import Path

from aimq_serving.uploads.storage import UploadStorage, new_upload_id


def test_a_run_moves_a_queued_body_into_place_and_the_api_finds_it_done(tmp_path: Path) -> None:
    storage = UploadStorage(tmp_path)
    upload_id = new_upload_id()
    storage.incoming_path(upload_id).write_bytes(b"a,b\n1,2\n")
    claimed = storage.claim_input(upload_id, "csv")
    assert claimed == storage.input_path(upload_id, "csv") and claimed.read_bytes() == b"a,b\n1,2\n"
    assert not storage.incoming_path(upload_id).exists()
    assert storage.claim_input(upload_id, "csv") == claimed  # a run retry finds it in place
    assert storage.commit_incoming(upload_id, "csv") == claimed  # the API, slower than the run


def test_a_withdrawn_upload_has_no_input(tmp_path: Path) -> None:
    storage = UploadStorage(tmp_path)
    upload_id = new_upload_id()
    assert storage.claim_input(upload_id, "csv") is None
    assert not storage.directory(upload_id).exists()


def test_sweep_removes_only_bodies_idle_for_longer_than_the_limit(tmp_path: Path) -> None:
    storage = UploadStorage(tmp_path)
    idle, live = new_upload_id(), new_upload_id()
    for upload_id in (idle, live):
        storage.incoming_path(upload_id).write_bytes(b"a,b\n")
    long_ago = time.time() - 120
    os.utime(storage.incoming_path(idle), (long_ago, long_ago))
    assert storage.sweep_incoming(60) == [idle]
    assert not storage.incoming_path(idle).exists() and storage.incoming_path(live).exists()
    assert UploadStorage(tmp_path / "empty").sweep_incoming(60) == []  # no incoming/ yet
