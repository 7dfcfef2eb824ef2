"""RabbitMQ killed and restarted during a burst of uploads: every upload got 202 and is scored
exactly once, or got 503 (Retry-After, a JSON reason) and went through when the client retried;
nothing was acknowledged that was not stored."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from tests.helpers.faults import (
    FaultPlatform,
    assert_scored_once,
    csv_bytes,
    incoming,
    runs_of,
    stored_ids,
    wait_queue_drained,
    wait_until,
    withdrawn,
)

pytestmark = pytest.mark.slow

CLIENTS = 4
# Uploads per client; the broker goes down after the first few 202s and comes back a few seconds later.
FILES_PER_CLIENT = 3
ROWS = 3
MAX_ATTEMPTS = 30
PACE_S = 0.3


@dataclass
class Burst:
    accepted: dict[str, int] = field(default_factory=dict)  # upload id -> file number
    refused: list[httpx.Response] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, api_url: str, number: int, content: bytes) -> None:
        """Upload files one after the other; a 503 is retried after its Retry-After, as a client should."""
        with httpx.Client(base_url=api_url, timeout=30) as http:
            for f in range(FILES_PER_CLIENT):
                for _ in range(MAX_ATTEMPTS):
                    try:
                        response = http.post("/upload", files={"file": (f"burst-{number}-{f}.csv", content)})
                    except httpx.TransportError as exc:  # the API itself must stay up: a failure
                        with self.lock:
                            self.other.append(repr(exc))
                        return
                    if response.status_code == 202:
                        with self.lock:
                            self.accepted[response.json()["upload_id"]] = number * FILES_PER_CLIENT + f
                        # Paced, so that the burst outlasts the kill: the next files meet the outage.
                        time.sleep(PACE_S)
                        break
                    with self.lock:
                        if response.status_code != 503:
                            self.other.append(f"{response.status_code} {response.text}")
                            return
                        self.refused.append(response)
                    time.sleep(float(response.headers.get("retry-after", "1")))
                else:
                    with self.lock:
                        self.other.append(f"file {f} of client {number} never accepted")


def test_broker_restart_during_a_burst_loses_and_duplicates_nothing(fault_platform: FaultPlatform) -> None:
    fp = fault_platform
    before = stored_ids(fp)
    content = csv_bytes(ROWS)
    burst = Burst()
    threads = [threading.Thread(target=burst.client, args=(fp.api_url, n, content)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(burst.accepted) >= 3, "the first uploads to be accepted", 60, fp, interval_s=0.01)
    fp.rabbit.kill(signal.SIGKILL)  # a crash, in the middle of the burst
    try:
        wait_until(
            lambda: len(burst.refused) >= CLIENTS,
            "uploads to be refused while the broker is down",
            60,
            fp,
            interval_s=0.05,
        )
    finally:
        fp.rabbit.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), "a client hung"

    assert not burst.other, burst.other
    assert sorted(burst.accepted.values()) == list(range(CLIENTS * FILES_PER_CLIENT))  # each file once
    for refused in burst.refused:
        assert refused.headers["retry-after"] == "1"
        assert "could not be queued and was not kept" in refused.json()["detail"]

    for upload_id in burst.accepted:
        assert_scored_once(fp, upload_id, ROWS)
    wait_queue_drained(fp)
    # Stored: exactly the accepted uploads; a refused upload left no file behind.
    assert stored_ids(fp) - before == set(burst.accepted)
    assert not incoming(fp)
    # A message whose confirm the API gave up on may still have reached the broker: its run finds
    # no file and no status, and ends without scoring or reporting anything.
    stray = {r.tags["aimq/upload_id"] for r in fp.instance.get_runs() if "aimq/upload_id" in r.tags}
    stray -= set(burst.accepted) | before
    for upload_id in stray:
        wait_until(
            lambda upload_id=upload_id: all(r.is_finished for r in runs_of(fp, upload_id)),
            f"the run of {upload_id}",
            120,
            fp,
        )
        assert withdrawn(fp, upload_id), upload_id
