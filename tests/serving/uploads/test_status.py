"""Upload status records in the real Redis, under the test session's prefix."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from aimq_serving.settings import AimqSettings
from aimq_serving.uploads.messages import InvalidMessage, UploadMessage
from aimq_serving.uploads.status import UploadStatusStore
from aimq_serving.uploads.storage import new_upload_id


def message(created: datetime | None = None) -> UploadMessage:
    upload_id = new_upload_id()
    return UploadMessage(
        upload_id=upload_id,
        format="xlsx",
        sha256="a" * 64,
        size=10,
        original_name="listings.xlsx",
        created_at=created or datetime.now(UTC),
    )


@pytest.fixture
def status(settings: AimqSettings, upload_records: None) -> UploadStatusStore:
    return UploadStatusStore.from_settings(settings)


def test_lifecycle(status: UploadStatusStore) -> None:
    msg = message()
    status.register(msg)
    record = status.get(msg.upload_id)
    assert record is not None and record.state == "queued" and record.original_name == "listings.xlsx"
    assert record.run_id is None

    status.attach_run(msg.upload_id, "run-1")
    status.start(msg, "run-1")
    assert status.get(msg.upload_id).rows_expected is None
    status.expect(msg.upload_id, 98)
    status.progress(msg.upload_id, 50, 2)
    record = status.get(msg.upload_id)
    assert (record.state, record.run_id, record.rows_done, record.rows_rejected) == ("running", "run-1", 50, 2)
    assert (record.rows_expected, record.rows_total) == (98, None)
    status.start(msg, "run-2")  # a rerun measures the file again
    assert status.get(msg.upload_id).rows_expected is None

    status.succeed(msg.upload_id, rows_total=100, rows_rejected=3, model_versions={"A": 2}, stats={"total_s": 1.5})
    record = status.get(msg.upload_id)
    assert (record.state, record.rows_total, record.rows_done, record.rows_rejected) == ("succeeded", 100, 100, 3)
    assert record.model_versions == {"A": 2} and record.stats == {"total_s": 1.5}
    assert record.finished_at is not None and record.error is None
    assert record.drift is None  # a run that did not judge drift

    drift = {"verdict": "not_judged", "reason": "too few rows to judge", "rows_judged": 0, "groups": {}}
    status.succeed(msg.upload_id, rows_total=1, rows_rejected=0, model_versions={}, stats={}, drift=drift)
    assert status.get(msg.upload_id).drift == drift
    status.start(msg, "run-3")  # a rerun judges again
    assert status.get(msg.upload_id).drift is None


def test_register_after_the_run_started_keeps_the_runs_state(status: UploadStatusStore) -> None:
    msg = message()
    status.start(msg, "run-1")  # the run was faster than the API's write after the confirm
    status.register(msg)
    assert status.get(msg.upload_id).state == "running"


def test_failure_reports_about_an_old_run_do_not_undo_a_newer_one(status: UploadStatusStore) -> None:
    msg = message()
    status.register(msg)
    status.start(msg, "run-2")
    assert not status.fail(msg.upload_id, "run-1 crashed", run_id="run-1")
    assert status.get(msg.upload_id).state == "running"
    assert status.fail(msg.upload_id, "run-2 crashed", run_id="run-2")
    record = status.get(msg.upload_id)
    assert (record.state, record.error) == ("failed", "run-2 crashed")
    # Already failed: a second report changes nothing.
    assert not status.fail(msg.upload_id, "again", run_id="run-2")
    # A rerun starts over.
    status.start(msg, "run-3")
    record = status.get(msg.upload_id)
    assert (record.state, record.error) == ("running", None)
    assert not status.fail(new_upload_id(), "unknown upload", run_id="x")


def test_recent_lists_newest_first_with_a_state_filter(status: UploadStatusStore) -> None:
    base = datetime.now(UTC) + timedelta(days=1)  # newer than any other test's uploads
    msgs = [message(base + timedelta(seconds=i)) for i in range(3)]
    for msg in msgs:
        status.register(msg)
    status.start(msgs[1], "r")
    status.fail(msgs[1].upload_id, "bad input")
    assert [r.upload_id for r in status.recent(limit=3)] == [m.upload_id for m in reversed(msgs)]
    failed = status.recent(limit=10, state="failed")
    assert msgs[1].upload_id in [r.upload_id for r in failed]
    assert all(r.state == "failed" for r in failed)
    assert status.get(new_upload_id()) is None


def test_message_contract() -> None:
    msg = message()
    assert UploadMessage.parse(msg.to_json()) == msg
    with pytest.raises(InvalidMessage, match="not valid JSON"):
        UploadMessage.parse(b"{not json")
    with pytest.raises(InvalidMessage, match="must be a JSON object"):
        UploadMessage.parse(b"[1, 2]")
    with pytest.raises(InvalidMessage, match="sha256: Field required"):
        UploadMessage.parse(msg.model_dump_json(exclude={"sha256"}).encode())
    # Version-1 messages of earlier APIs carry stored_path: ignored, the path follows from id and format.
    assert "stored_path" not in json.loads(msg.to_json())
    earlier = msg.model_dump(mode="json") | {"stored_path": "../../etc/passwd"}
    assert UploadMessage.parse(json.dumps(earlier).encode()) == msg
    extra = msg.model_dump(mode="json") | {"added_later": 1}
    assert UploadMessage.model_validate(extra) == msg  # unknown fields are ignored
