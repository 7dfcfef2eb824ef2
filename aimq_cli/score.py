"""`aimq score`: upload a file to the API, follow its scoring run with a progress line, download the
result and print a summary (rows scored and rejected with reasons, model versions)."""

from __future__ import annotations

import csv
import io
import os
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from aimq_cli.client import Api, api_error
from aimq_cli.errors import CliError
from aimq_cli.progress_bar import ProgressLine
from aimq_serving import drift_verdict
from aimq_tabular.formats import MEDIA_TYPES

# How long polling rides out an unreachable API or status store (a restart, a Redis failover)
# before giving up; the upload itself is safe on the server meanwhile.
_OUTAGE_BUDGET_S = 30.0
# When an upload stays queued this long, say what usually causes it.
_QUEUED_HINT_S = 30.0
_REJECTED_SHOWN = 10


def default_out(source: Path, fmt: str) -> Path:
    return source.with_name(f"{source.stem}_scored.{fmt}")  # the name the API gives its download


def _format_of_name(path: Path) -> str | None:
    suffix = path.suffix.lower().lstrip(".")
    return suffix if suffix in MEDIA_TYPES else None


def _check_target(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise CliError(f"{out} already exists; pass --force to overwrite it, or --out to write elsewhere")
    if out.exists() and not out.is_file():
        raise CliError(f"{out} exists and is not a file")
    if not out.parent.is_dir():
        raise CliError(f"cannot write {out}: the folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise CliError(f"cannot write {out}: the folder {out.parent} is not writable")


class _CountingReader(io.RawIOBase):
    """The file as httpx reads it for the multipart body, reporting bytes sent so far."""

    def __init__(self, fh: BinaryIO, on_read: Any):
        self.fh = fh
        self.on_read = on_read
        self.sent = 0

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:  # lets httpx take the length from fstat and send a Content-Length
        return self.fh.fileno()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self.fh.seek(offset, whence)
        self.sent = position
        return position

    def tell(self) -> int:
        return self.fh.tell()

    def read(self, size: int = -1) -> bytes:
        chunk = self.fh.read(size)
        self.sent += len(chunk)
        self.on_read(self.sent)
        return chunk


@dataclass
class ScoreOptions:
    file: Path
    out: Path | None
    force: bool
    api_url: str
    timeout_s: float | None
    poll_s: float = 0.5
    api_key: str | None = None


def cmd_score(options: ScoreOptions, progress: ProgressLine | None = None) -> int:
    source = options.file
    if not source.exists():
        raise CliError(f"{source}: no such file")
    if not source.is_file():
        raise CliError(f"{source} is not a file")
    guessed = _format_of_name(source)
    out = options.out or (default_out(source, guessed) if guessed else None)
    if out is not None:
        _check_target(out, options.force)
    progress = progress or ProgressLine()
    try:
        with Api(options.api_url, api_key=options.api_key) as api:
            upload_id = _upload(api, source, progress)
            try:
                record = _wait(api, upload_id, options, progress)
            except KeyboardInterrupt:
                progress.message(
                    f"stopped waiting; upload {upload_id} goes on on the server: {api.url('/uploads/' + upload_id)}"
                )
                raise
            out = out or default_out(source, record["format"])
            _check_target(out, options.force)
            _save(api, record["result_url"], out, options.force)
            if record["format"] == "csv" and record.get("about_url"):
                # A CSV has no sheet for its provenance: it goes beside it (an xlsx has its about sheet).
                _save(api, record["about_url"], about_out(out), options.force)
            rejected = _rejected_rows(api, record["rejected_url"]) if record["rows_rejected"] else []
    finally:
        progress.clear()  # an error line must not land on the end of a half-drawn bar
    _print_summary(record, out, rejected, api.url(record["rejected_url"]))
    return 0


def about_out(out: Path) -> Path:
    """Where ``aimq score`` saves a CSV result's provenance: ``<result>.about.json``."""
    return out.with_name(f"{out.stem}.about.json")


def _upload(api: Api, source: Path, progress: ProgressLine) -> str:
    size = source.stat().st_size
    mime = MEDIA_TYPES.get(_format_of_name(source) or "", "application/octet-stream")

    def sent(done: int) -> None:
        progress.update("uploading", done / size if size else 1.0, f"{_size(done)} of {_size(size)}")

    try:
        fh = open(source, "rb")
    except OSError as exc:
        raise CliError(f"cannot read {source}: {exc.strerror}") from exc
    with fh:
        reader = _CountingReader(fh, sent)
        # Uploads of large files take a while on a slow link; the API answers once stored and queued.
        response = api.request(
            "POST",
            "/upload",
            f"the API refused {source.name}",
            files={"file": (source.name, reader, mime)},
            timeout=httpx.Timeout(30.0, write=None, read=120.0),
        )
    body = response.json()
    progress.message(f"uploaded {source.name} ({_size(size)}): upload {body['upload_id']}")
    return body["upload_id"]


def _wait(api: Api, upload_id: str, options: ScoreOptions, progress: ProgressLine) -> dict[str, Any]:
    started = time.monotonic()
    outage_since: float | None = None
    hinted = False
    while True:
        try:
            response = api.http.get(f"/uploads/{upload_id}")
            if response.status_code in (429, 503):  # rate limited, or Redis briefly away: ask again
                raise _Transient(api_error(response, "upload status unavailable"))
            if response.is_error:
                raise api.error(response, f"upload {upload_id}")
            outage_since = None
            record = response.json()
        except (httpx.TransportError, _Transient) as exc:
            outage_since = outage_since or time.monotonic()
            if time.monotonic() - outage_since > _OUTAGE_BUDGET_S:
                if isinstance(exc, _Transient):
                    raise exc.error from None
                raise api.unreachable(exc) from exc
            progress.update("waiting", None, "the API or its status store does not answer; retrying")
            time.sleep(options.poll_s)
            continue
        state = record["state"]
        elapsed = time.monotonic() - started
        if state == "succeeded":
            progress.update("scoring", 1.0, _rows_text(record))
            progress.message(f"scored {record['rows_total']:,} rows, {elapsed:.1f} s after the upload")
            return record
        if state == "failed":
            progress.clear()
            run = f" (run: {record['run_url']})" if record.get("run_url") else ""
            raise CliError(
                f"scoring {record['original_name']} failed: {record.get('error') or 'no reason recorded'}{run}"
            )
        if state == "queued":
            progress.update("queued", None, "waiting for the Dagster sensor to start its run")
            if elapsed > _QUEUED_HINT_S and not hinted:
                hinted = True
                progress.message(
                    f"still queued after {elapsed:.0f} s: is the Dagster daemon running? ('aimq up' starts it)"
                )
        else:
            progress.update("scoring", _running_fraction(record), _rows_text(record))
        if options.timeout_s is not None and elapsed > options.timeout_s:
            progress.clear()
            raise CliError(
                f"upload {upload_id} is still {state} after {options.timeout_s:g} s; it goes on on the server: "
                f"{api.url('/uploads/' + upload_id)}"
            )
        time.sleep(options.poll_s)


class _Transient(Exception):
    def __init__(self, error: CliError):
        self.error = error


def _running_fraction(record: Mapping[str, Any]) -> float | None:
    """Rows done against the file's expected rows; None (no percentage) when the file did not say,
    or when it said too few (an estimate is never shown as more than 100 %)."""
    expected = record.get("rows_expected")
    if not expected or record["rows_done"] > expected:
        return None
    return record["rows_done"] / expected


def _rows_text(record: Mapping[str, Any]) -> str:
    total = record.get("rows_total") or record.get("rows_expected")
    done = (
        f"{record['rows_done']:,}/{total:,} rows"
        if total and record["rows_done"] <= total
        else f"{record['rows_done']:,} rows"
    )
    return done + (f", {record['rows_rejected']:,} rejected" if record.get("rows_rejected") else "")


def _save(api: Api, path: str, out: Path, force: bool) -> None:
    """Stream the result next to ``out`` and rename it into place once complete."""
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    except OSError as exc:
        raise CliError(f"cannot write in {out.parent}: {exc.strerror}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh, api.download(path, "downloading the result failed") as response:
            for chunk in response.iter_bytes(1 << 20):
                fh.write(chunk)
        if out.exists() and not force:  # appeared while scoring
            raise CliError(f"{out} already exists; pass --force to overwrite it, or --out to write elsewhere")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _rejected_rows(api: Api, path: str) -> list[tuple[str, str]]:
    """(row, reasons) of every rejected row; the file lists a row's reasons joined by '; '."""
    with tempfile.SpooledTemporaryFile(max_size=8 << 20, mode="w+b") as spool:
        with api.download(path, "downloading the rejected rows failed") as response:
            for chunk in response.iter_bytes(1 << 20):
                spool.write(chunk)
        spool.seek(0)
        reader = csv.DictReader(io.TextIOWrapper(spool, encoding="utf-8", newline=""))
        return [(row.get("row", "?"), row.get("errors", "")) for row in reader]


def _print_summary(record: Mapping[str, Any], out: Path, rejected: list[tuple[str, str]], rejected_url: str) -> None:
    total, bad = record["rows_total"], record["rows_rejected"]
    versions = record.get("model_versions") or {}
    print(f"file:     {record['original_name']}  ({total:,} rows: {total - bad:,} scored, {bad:,} rejected)")
    print("models:   " + (", ".join(f"{g} v{v}" for g, v in sorted(versions.items())) or "none"))
    print(drift_verdict.summary(record.get("drift")))
    print(f"result:   {out}")
    if record.get("run_url"):
        print(f"run:      {record['run_url']}")
    if not rejected:
        return
    fields = Counter(reason.split(":", 1)[0].strip() for _, reasons in rejected for reason in reasons.split("; "))
    print("rejected: by field " + ", ".join(f"{f} {n:,}" for f, n in fields.most_common()))
    for row, reasons in rejected[:_REJECTED_SHOWN]:
        print(f"  row {row}: {reasons}")
    if len(rejected) > _REJECTED_SHOWN:
        where = "the result's 'rejected' sheet" if record["format"] == "xlsx" else rejected_url
        print(f"  ... {len(rejected) - _REJECTED_SHOWN:,} more: see {where}")


def _size(size: int) -> str:
    if size < 1000:
        return f"{size} B"
    if size < 1_000_000:
        return f"{size / 1e3:.1f} kB"
    return f"{size / 1e6:.1f} MB"
