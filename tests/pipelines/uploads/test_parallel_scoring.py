"""A file scored in parts across processes comes back as scored in one piece; the run's stages are
timed and its critical path adds up; a parser process that dies is a crash of the run, not bad input."""

from __future__ import annotations

import os
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import fastexcel
import pytest

from aimq_pipelines.uploads.input_table import InputTable
from aimq_pipelines.uploads.scoring import PinnedModels, ScoreResult, score_file
from aimq_pipelines.uploads.stage_times import StageTimes
from aimq_serving import schema
from aimq_serving.loaded_models import ModelCache
from aimq_serving.model_store import ModelStore
from aimq_tabular import xlsx_cells, xlsx_reader
from tests.helpers.corpus import xlsx_via_xlsxwriter
from tests.helpers.paths import SAMPLES


@pytest.fixture(autouse=True)
def parsed_by_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """This 2,500-row file is small enough to be parsed inline (``INLINE_SHEET_BYTES``): here its
    parts go to the worker processes, as a large file's do."""
    monkeypatch.setattr(xlsx_reader, "INLINE_SHEET_BYTES", 0)


@pytest.fixture(scope="module")
def pinned(trained_store: ModelStore) -> PinnedModels:
    return PinnedModels.from_cache(ModelCache(trained_store))


@pytest.fixture(scope="module")
def parted_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,500 rows: three parts of 1,000 rows; bad cells in each part, a column mixing kinds in the
    second part only, and blank rows across the first part boundary."""
    sample = fastexcel.read_excel(str(SAMPLES / "100_rows.xlsx")).load_sheet(0).to_pandas()
    rows: list[list[Any]] = [list(sample.iloc[i % len(sample)]) for i in range(2500)]
    km = schema.INPUT_COLUMNS.index("kilometers")
    for i in (5, 1500, 2400):
        rows[i][km] = "lots"  # text in a number column: rejected, and the column mixes kinds in its part
    for i in (998, 999, 1000, 1001):
        rows[i] = [None] * len(rows[i])
    rows[1700][schema.INPUT_COLUMNS.index(schema.GROUP_FIELD)] = "Z"  # an unknown group
    path = tmp_path_factory.mktemp("parted") / "parted.xlsx"
    path.write_bytes(xlsx_via_xlsxwriter(list(schema.INPUT_COLUMNS), rows))
    return path


def _score(out: Path, source: Path, pinned: PinnedModels, **kwargs: Any) -> ScoreResult:
    out.mkdir()
    return score_file(
        InputTable.open(source, "xlsx", work_dir=out),
        result_path=out / "result.xlsx",
        rejected_path=out / "rejected.csv",
        models=pinned,
        max_rows=1_000_000,
        work_dir=out,
        **kwargs,
    )


def _sheets(path: Path) -> dict[str, Any]:
    book = fastexcel.read_excel(str(path))
    # As text: every cell's value as the file holds it, whatever type a part's column got.
    return {
        name: book.load_sheet(name, dtypes="string").to_arrow().to_pydict()
        for name in book.sheet_names
        if name != "about"
    }


def test_parts_parsed_in_two_processes_come_back_as_one_piece(
    tmp_path: Path, pinned: PinnedModels, parted_file: Path
) -> None:
    whole = _score(tmp_path / "whole", parted_file, pinned, chunk_rows=100_000)
    parted = _score(tmp_path / "parted", parted_file, pinned, chunk_rows=1_000, parsers=2)
    assert parted.stats["parts"] == 3 and whole.stats["parts"] == 1
    assert (parted.rows_total, parted.rows_rejected) == (whole.rows_total, whole.rows_rejected) == (2496, 4)
    assert _sheets(tmp_path / "parted" / "result.xlsx") == _sheets(tmp_path / "whole" / "result.xlsx")
    rejected = (tmp_path / "parted" / "rejected.csv").read_text()
    assert rejected == (tmp_path / "whole" / "rejected.csv").read_text()
    assert [line.split(",")[0] for line in rejected.splitlines()[1:]] == ["7", "1502", "1702", "2402"]


def test_a_small_sheet_is_parsed_inline_with_the_same_result(
    tmp_path: Path, pinned: PinnedModels, parted_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No worker process is started for it (none to fork, none to stop: ~50 ms of a small upload's run)."""
    by_workers = _score(tmp_path / "workers", parted_file, pinned, chunk_rows=1_000, parsers=2)
    monkeypatch.setattr(xlsx_reader, "INLINE_SHEET_BYTES", 1 << 30)
    monkeypatch.setattr(xlsx_reader, "PartParsers", None)  # were a worker started, the read would fail
    inline = _score(tmp_path / "inline", parted_file, pinned, chunk_rows=1_000, parsers=2)
    assert inline.stats["parts"] == by_workers.stats["parts"] == 3
    assert inline.stats["workers_peak_rss_mb"] == 0 < by_workers.stats["workers_peak_rss_mb"]
    assert (inline.rows_total, inline.rows_rejected) == (by_workers.rows_total, by_workers.rows_rejected)
    assert _sheets(tmp_path / "inline" / "result.xlsx") == _sheets(tmp_path / "workers" / "result.xlsx")
    assert (tmp_path / "inline" / "rejected.csv").read_text() == (tmp_path / "workers" / "rejected.csv").read_text()


def test_the_critical_path_adds_up_to_the_run(tmp_path: Path, pinned: PinnedModels, parted_file: Path) -> None:
    stats = _score(tmp_path / "run", parted_file, pinned, chunk_rows=1_000).stats
    for stage in ("split", "parse", "score", "validate", "predict", "write"):
        assert stats[f"stage_{stage}_s"] > 0 and stats[f"cpu_{stage}_s"] > 0, stage
    critical = sum(v for k, v in stats.items() if k.startswith("critical_"))
    assert critical == pytest.approx(stats["total_s"], abs=0.05)


def test_a_parser_process_that_dies_fails_the_run_as_a_crash(
    tmp_path: Path, pinned: PinnedModels, parted_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed for memory, say: the run's retry policy applies, as to any crash; never a failed upload."""
    monkeypatch.setattr(xlsx_cells.PartLoader, "load", lambda self, part: os._exit(9))  # inherited by the fork
    with pytest.raises(BrokenProcessPool):
        _score(tmp_path / "run", parted_file, pinned, chunk_rows=1_000)
    assert not list((tmp_path / "run").glob("xlsx-parts-*")), "its parts are removed"


def test_the_critical_path_follows_what_each_span_waited_for() -> None:
    times = StageTimes()
    times.started = 0.0
    spans = [
        ("split", 0, 0.0, 1.0),
        ("split", 1, 1.0, 2.0),
        ("parse", 0, 1.0, 3.0),
        ("parse", 1, 3.0, 5.0),  # waited for part 0's parse, not for its own split
        ("score", 0, 3.5, 4.5),  # 0.5 s after its parse: a wait, but not on the critical path
        ("score", 1, 5.0, 6.0),
        ("write", 0, 4.5, 5.5),
        ("write", 1, 6.0, 7.0),
    ]
    for stage, part, start, end in spans:
        times(stage, part, start, end, end - start)
    times("predict", 1, 5.0, 5.75, 0.75)
    summary = times.summary(ended=7.5)
    assert summary["critical_write_s"] == 1.0  # part 1's write; part 0's ended before part 1 was scored
    assert summary["critical_predict_s"] == 0.75 and summary["critical_score_other_s"] == 0.25
    assert summary["critical_parse_s"] == 4.0  # both parses
    assert summary["critical_split_s"] == 1.0  # part 0's split only
    assert summary["critical_wait_s"] == 0.0
    assert summary["critical_finish_s"] == 0.5
    assert summary["stage_parse_s"] == 4.0 and summary["parts"] == 2
    assert sum(v for k, v in summary.items() if k.startswith("critical_")) == 7.5
