"""The bad-input corpus (tests/helpers/corpus.py) through the upload receive path and the scoring
function: every case gets its outcome, never a crash, a hang or an unbounded amount of memory."""

from __future__ import annotations

import asyncio
import csv
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aimq_pipelines.uploads.input_table import BadInput, InputTable
from aimq_pipelines.uploads.scoring import MAX_CELL_CHARS, PinnedModels, score_file
from aimq_serving.api.intake.receive import ReceivedFile, UploadRejected, receive
from aimq_serving.loaded_models import ModelCache
from aimq_serving.model_store import ModelStore
from aimq_tabular import xlsx_guard
from tests.helpers.corpus import CASES, Case, Failed, Refused, Scored
from tests.helpers.paths import REPO

BOUNDARY = "corpus-boundary"


@pytest.fixture(scope="module")
def pinned(trained_store: ModelStore) -> PinnedModels:
    return PinnedModels.from_cache(ModelCache(trained_store))


def multipart(name: str, content: bytes) -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'.encode()
    return head + content + f"\r\n--{BOUNDARY}--\r\n".encode()


async def _chunks(body: bytes, size: int = 64 << 10) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def upload(directory: Path, name: str, content: bytes) -> ReceivedFile:
    """The API's receive path: streaming multipart parse, size limit, type sniffing, zip checks."""
    target = directory / "incoming" / "case.part"
    return asyncio.run(
        receive(_chunks(multipart(name, content)), f"multipart/form-data; boundary={BOUNDARY}", target, 256 << 20)
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_corpus_case(case: Case, tmp_path: Path, pinned: PinnedModels, monkeypatch: pytest.MonkeyPatch) -> None:
    # The same code with smaller streaming limits, so a "too large" row needs megabytes, not 32 MiB.
    monkeypatch.setattr(xlsx_guard, "MAX_ROW_BYTES", 1 << 20)
    content = case.write(tmp_path).read_bytes()
    outcome = case.outcome
    if isinstance(outcome, Refused):
        with pytest.raises(UploadRejected) as refused:
            upload(tmp_path, case.name, content)
        assert refused.value.status == outcome.status, refused.value.detail
        assert outcome.detail in refused.value.body()["detail"]
        assert not list((tmp_path / "incoming").iterdir())  # nothing of a refused upload stays
        return

    received = upload(tmp_path, case.name, content)
    out = tmp_path / "out"
    out.mkdir()
    result_path, rejected_path = out / f"result.{received.format}", out / "rejected.csv"

    def run() -> object:
        return score_file(
            InputTable.open(received.path, received.format, sha256=received.sha256, work_dir=out),
            result_path=result_path,
            rejected_path=rejected_path,
            models=pinned,
            max_rows=case.max_rows,
            chunk_rows=1000,
            work_dir=out,
        )

    if isinstance(outcome, Failed):
        with pytest.raises(BadInput) as failed:
            run()
        assert outcome.reason in str(failed.value)
        assert len(str(failed.value)) < 1000  # a reason for a person, not a dump
        assert sorted(p.name for p in out.iterdir()) == []  # nothing half-written
        return

    assert isinstance(outcome, Scored)
    result = run()
    assert (result.rows_total, result.rows_rejected) == (outcome.rows_total, len(outcome.rejected))
    with open(rejected_path, newline="", encoding="utf-8") as fh:
        listed = {int(r["row"]): r for r in csv.DictReader(fh)}
    assert sorted(listed) == sorted(outcome.rejected)
    for row, reasons in outcome.rejected.items():
        for reason in reasons:
            assert reason in listed[row]["errors"], (row, listed[row]["errors"])
        assert len(listed[row]["errors"]) < 1000
        assert all(len(v) <= MAX_CELL_CHARS for v in listed[row].values())


def test_a_huge_cell_is_cut_where_it_is_written_back(tmp_path: Path, pinned: PinnedModels) -> None:
    import fastexcel

    case = next(c for c in CASES if c.id == "huge-strings")
    source = case.write(tmp_path)
    score_file(
        InputTable.open(source, "xlsx"),
        result_path=tmp_path / "r.xlsx",
        rejected_path=tmp_path / "r.csv",
        models=pinned,
        max_rows=100,
    )
    scored = fastexcel.read_excel(str(tmp_path / "r.xlsx")).load_sheet(0).to_pandas()
    assert scored["notes"].str.len().max() == MAX_CELL_CHARS
    assert scored["color"].str.len().max() == MAX_CELL_CHARS
    assert scored["predicted_price"].isna().tolist() == [False, True, True, False]


_BOMBS = textwrap.dedent(
    """
    import json, sys, tempfile
    from pathlib import Path
    from aimq_tabular import sniff
    from aimq_tabular.xlsx_reader import XlsxFormatError, declared_data_rows, iter_xlsx_batches
    from tests.helpers import corpus

    def peak_mb():
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024

    out = {}
    tmp = Path(tempfile.mkdtemp())
    # The peak from here on: imports (dagster, pyarrow...) are not what is measured.
    Path("/proc/self/clear_refs").write_text("5")
    out["baseline_mb"] = peak_mb()
    for case_id in sys.argv[1:]:
        path = corpus.BY_ID[case_id].write(tmp)
        messages = []
        try:
            sniff.identify(path, path.read_bytes()[: sniff.HEAD_BYTES])
            messages.append("accepted")
        except (sniff.UnsupportedType, sniff.DamagedFile) as exc:
            messages.append(str(exc))
        declared_data_rows(path)  # the run's progress estimate reads the sheet's first bytes too
        try:
            for _ in iter_xlsx_batches(path, work_dir=tmp):
                pass
            messages.append("read")
        except XlsxFormatError as exc:
            messages.append(str(exc))
        out[case_id] = messages
    out["peak_mb"] = peak_mb()
    print(json.dumps(out))
    """
)


def test_bombs_are_refused_in_bounded_memory() -> None:
    """Each bomb inflates to 1 GiB (or expands entities to gigabytes): in a fresh process, the
    upload check and the reader refuse them all while the process never holds a fraction of it."""
    bombs = [
        "zip-bomb-shared-strings",
        "zip-bomb-sheet",
        "zip-bomb-lying-sizes",
        "entity-bomb-shared-strings",
        "entity-bomb-sheet",
    ]
    done = subprocess.run(
        [sys.executable, "-c", _BOMBS, *bombs], cwd=REPO, capture_output=True, text=True, timeout=300, check=True
    )
    report = json.loads(done.stdout)
    # Reading any of them whole would take 1 GiB or more.
    assert report["peak_mb"] - report["baseline_mb"] < 100, report
    for bomb in ("zip-bomb-shared-strings", "zip-bomb-sheet"):
        assert all("refused as a zip bomb" in m for m in report[bomb]), report[bomb]
    assert report["zip-bomb-lying-sizes"][0] == "accepted"  # its directory claims 1 MiB: only reading finds out
    assert "Bad CRC-32" in report["zip-bomb-lying-sizes"][1]
    for bomb in ("entity-bomb-shared-strings", "entity-bomb-sheet"):
        assert report[bomb][0] == "accepted" and "XML entity bomb" in report[bomb][1], report[bomb]
