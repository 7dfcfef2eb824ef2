"""The API killed (SIGKILL) and restarted while clients upload: no stored upload without its message,
no message whose file is lost; what a killed API leaves in ``incoming/`` is scored (its message was
queued) or swept (it never was), and every upload answered with 202 is scored once."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from aimq_pipelines.uploads.jobs import uploads_of
from aimq_serving.uploads.broker import Topology, UploadPublisher
from aimq_serving.uploads.messages import UploadMessage
from aimq_serving.uploads.status import utc_now
from aimq_serving.uploads.storage import UploadStorage
from tests.helpers.faults import (
    ABANDONED_AFTER_S,
    FaultPlatform,
    assert_scored_once,
    csv_bytes,
    incoming,
    runs_of,
    status_store,
    stored_ids,
    wait_queue_drained,
    wait_until,
    withdrawn,
)

pytestmark = pytest.mark.slow

ROWS = 3
FAST_CLIENTS = 2
# ~3 MB: half of it is more than the API's 1 MiB write buffer, so the cut-off body reaches the disk.
SLOW_ROWS = 40_000
HALF_SENT_BYTES = 256 * 1024
# A bound on what the fast clients send, should the kill never come.
MAX_FAST_UPLOADS = 20


@dataclass
class Clients:
    killed: threading.Event = field(default_factory=threading.Event)
    accepted: list[str] = field(default_factory=list)
    cut_off: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fast(self, api_url: str, content: bytes) -> None:
        """Uploads until the API dies under it (a few per second, so some are in flight then)."""
        with httpx.Client(base_url=api_url, timeout=30) as http:
            for _ in range(MAX_FAST_UPLOADS):
                if self.killed.is_set():
                    return
                try:
                    response = http.post("/upload", files={"file": ("fast.csv", content)})
                except httpx.TransportError as exc:
                    with self.lock:
                        self.cut_off.append(repr(exc))
                    return
                with self.lock:
                    if response.status_code == 202:
                        self.accepted.append(response.json()["upload_id"])
                    else:
                        self.other.append(f"{response.status_code} {response.text}")
                self.killed.wait(0.2)

    def slow(self, api_url: str, content: bytes) -> None:
        """Sends half a file, then nothing until the API is killed: its body is cut off mid-way."""
        boundary = uuid.uuid4().hex

        def body() -> Iterator[bytes]:
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.csv"\r\n'
                "Content-Type: text/csv\r\n\r\n"
            ).encode()
            yield content[: len(content) // 2]
            self.killed.wait(120)
            yield content[len(content) // 2 :] + f"\r\n--{boundary}--\r\n".encode()

        try:
            response = httpx.post(
                f"{api_url}/upload",
                content=body(),
                timeout=150,
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
        except httpx.TransportError as exc:
            with self.lock:
                self.cut_off.append(repr(exc))
            return
        with self.lock:
            self.other.append(f"the cut-off upload was answered: {response.status_code} {response.text}")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # moved into place meanwhile
        return 0


def kill_api(fp: FaultPlatform) -> None:
    api = fp.platform.services["api"].proc
    os.killpg(api.pid, signal.SIGKILL)
    api.wait()


def test_api_killed_during_uploads_leaves_no_orphans(fault_platform: FaultPlatform) -> None:
    fp = fault_platform
    before = stored_ids(fp)
    content = csv_bytes(ROWS)
    clients = Clients()
    threads = [threading.Thread(target=clients.fast, args=(fp.api_url, content)) for _ in range(FAST_CLIENTS)]
    threads.append(threading.Thread(target=clients.slow, args=(fp.api_url, csv_bytes(SLOW_ROWS))))
    for thread in threads:
        thread.start()
    try:
        # The half-sent body is the one the receiver has flushed part of (the others are tiny).
        wait_until(
            lambda: len(clients.accepted) >= 4 and any(_size(p) >= HALF_SENT_BYTES for p in incoming(fp)),
            "uploads, one of them half sent",
            60,
            fp,
            interval_s=0.02,
        )
        kill_api(fp)
    finally:
        clients.killed.set()
    left_behind = incoming(fp)
    assert left_behind  # at least the half-sent body
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a client hung"
    assert not clients.other, clients.other
    assert clients.cut_off  # the half-sent upload, at least

    fp.platform.start_api()
    with httpx.Client(base_url=fp.api_url, timeout=30) as http:
        for _ in range(FAST_CLIENTS):  # the clients try again, and get through
            response = http.post("/upload", files={"file": ("again.csv", content)})
            assert response.status_code == 202, response.text
            clients.accepted.append(response.json()["upload_id"])

    for upload_id in clients.accepted:
        assert_scored_once(fp, upload_id, ROWS)
    # What the killed API left in incoming/ is moved into place by its run (its message was
    # queued) or swept once idle for AIMQ_UPLOAD_ABANDONED_AFTER_S (it was not).
    wait_until(lambda: not incoming(fp), "abandoned bodies to be swept", ABANDONED_AFTER_S + 60, fp, interval_s=0.5)
    wait_queue_drained(fp)
    new = stored_ids(fp) - before
    assert set(clients.accepted) <= new
    for upload_id in new - set(clients.accepted):  # queued, but the client never heard back
        assert_scored_once(fp, upload_id, ROWS)
    queued = {upload_id for r in fp.instance.get_runs() for upload_id in uploads_of(r)}
    for upload_id in queued - new - before:
        wait_until(
            lambda upload_id=upload_id: all(r.is_finished for r in runs_of(fp, upload_id)),
            f"the run of {upload_id}",
            120,
            fp,
        )
        assert withdrawn(fp, upload_id), upload_id


def _queue_message(fp: FaultPlatform, content: bytes, *, keep_body: bool) -> str:
    """What an API killed right after the broker's confirm leaves: a queued message, and its
    complete body still in incoming/ (``keep_body``) or, had the API answered 503, no body."""
    storage = UploadStorage(fp.upload_dir)
    upload_id = uuid.uuid4().hex
    if keep_body:
        storage.incoming_path(upload_id).write_bytes(content)
    message = UploadMessage(
        upload_id=upload_id,
        format="csv",
        sha256=hashlib.sha256(content).hexdigest(),
        size=len(content),
        original_name="left.csv",
        created_at=utc_now(),
    )
    publisher = UploadPublisher(fp.rabbit.url, Topology.from_settings(fp.settings))
    try:
        publisher.publish(message)
    finally:
        publisher.close()
    return upload_id


def test_queued_body_left_in_incoming_is_moved_into_place_and_scored(fault_platform: FaultPlatform) -> None:
    fp = fault_platform
    kept = _queue_message(fp, csv_bytes(ROWS), keep_body=True)
    gone = _queue_message(fp, csv_bytes(ROWS), keep_body=False)

    record = assert_scored_once(fp, kept, ROWS)
    assert record["original_name"] == "left.csv"
    assert kept in stored_ids(fp)

    wait_until(lambda: any(r.is_finished for r in runs_of(fp, gone)), "the withdrawn upload's run", 120, fp)
    assert withdrawn(fp, gone)
    assert status_store(fp).get(gone) is None
    assert not incoming(fp)
