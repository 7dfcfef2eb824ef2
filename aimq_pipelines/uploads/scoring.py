"""Score an uploaded table with the shared predictor and write the result in the upload's format.

Same numbers as ``/predict/onnx``: rows are grouped by model group, encoded with that group's own
``FeatureSpec.encode_frame`` and run through ``LoadedModel.predict_onnx``, the code path of the API.
Models are pinned once per file, so every row of a group is scored by the same version.

The input (``input_table``: its bytes checked, its table found and its rows parsed, each once) is
streamed in batches (bounded memory) through a pipeline: an xlsx's parts are parsed in worker
processes while earlier batches are validated and predicted in two threads and written, in order,
in a third (docs/batch.md, "Reading and writing large files"; ``stage_times`` times each part's
stages). Rejected rows (a bad cell, an unknown group, a group with
no model) keep their place in the result with an empty prediction, and are listed with their
reasons in a ``rejected`` sheet (xlsx) and in ``rejected.csv``. Completely blank rows (a
spreadsheet's formatted but empty rows) are skipped and not counted.

Results are written under temporary names and renamed when complete, so a reader never sees a
half-written file.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import resource
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from aimq_pipelines.monitoring.drift import DriftReport
from aimq_pipelines.monitoring.monitor import Compared, DriftMonitor, DriftSettings
from aimq_pipelines.monitoring.sheet import drift_rows
from aimq_pipelines.uploads import merged_cells
from aimq_pipelines.uploads.input_table import BadInput, Columns, InputTable, row_numbers
from aimq_pipelines.uploads.provenance import UploadFacts, about, about_rows
from aimq_pipelines.uploads.results import (
    ERRORS,
    MODEL_ID,
    OUT_OF_RANGE,
    PRICE,
    PRICE_HIGH,
    PRICE_LOW,
    ROW,
    VERSION,
    ResultWriter,
    open_result,
    write_rejected_csv,
)
from aimq_pipelines.uploads.stage_times import StageTimes
from aimq_serving import conformal, schema, values
from aimq_serving.features import _MAX_ERRORS_PER_COLUMN, FeatureSpec, RowError, _plain
from aimq_serving.loaded_models import LoadedModel, ModelCache
from aimq_serving.model_store import NoModel, UnknownGroup
from aimq_serving.schema import allowed_note
from aimq_tabular import csv_reader, xlsx_cells, xlsx_reader
from aimq_tabular.part_parsers import ParseFault
from aimq_tabular.xlsx_writer import XlsxWriteError

# The most characters a spreadsheet cell holds (Excel's limit). A longer text (possible in a CSV or
# a hand-made xlsx) rejects its row and is cut to this length where it is written back, so one
# cell can neither make the result unreadable in Excel nor repeat megabytes in error messages.
MAX_CELL_CHARS = 32_767
# Error messages quote the user's values: past twice this length, the middle is cut out.
_MAX_QUOTED_CHARS = 200

Progress = Callable[[int, int], None]


@dataclass
class ScoreResult:
    rows_total: int = 0
    rows_rejected: int = 0
    model_versions: dict[str, int] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    # Where the table was found: the sheet (xlsx; None for CSV) and the header's row (CSV: line).
    data_sheet: str | None = None
    header_row: int = 1
    about: dict[str, object] = field(default_factory=dict)  # the provenance written with the result
    drift: DriftReport | None = None  # None: not asked for (score_file's ``drift``)


@dataclass
class PinnedModels:
    """The model of each group for one file; groups without a servable model and why."""

    models: dict[str, LoadedModel]
    unavailable: dict[str, str]

    @classmethod
    def from_cache(cls, cache: ModelCache) -> PinnedModels:
        """Each group's current version, loaded into ``cache`` unless it already holds it."""
        models: dict[str, LoadedModel] = {}
        unavailable: dict[str, str] = {}
        for group in schema.MODEL_GROUPS:
            try:
                models[group] = cache.refresh_group(group)
            except (NoModel, UnknownGroup) as exc:  # StoreUnavailable and TamperedModel propagate
                unavailable[group] = str(exc)
        return cls(models, unavailable)


def score_file(
    table: InputTable,
    *,
    result_path: Path,
    rejected_path: Path,
    models: PinnedModels,
    max_rows: int,
    chunk_rows: int = 50_000,  # AimqSettings.scoring_chunk_rows's default, which says why
    work_dir: Path | None = None,
    progress: Progress | None = None,
    upload: UploadFacts | None = None,
    about_path: Path | None = None,
    coverage: float = 0.9,
    parsers: int = 2,
    drift: DriftSettings | None = None,
) -> ScoreResult:
    """Score ``table`` into ``result_path`` and ``rejected_path`` (and its provenance, about
    ``upload``, into ``about_path`` when given), each price with its range at ``coverage``; raise
    BadInput if it cannot be. With ``drift`` settings, each group's rows are also compared with the
    profile of the version that priced them (``aimq_pipelines/monitoring``): ``ScoreResult.drift``.

    Three stages overlap: the reader prepares the next batches (an xlsx's parts are parsed by
    ``parsers`` worker processes), two scoring threads validate and predict (ONNX Runtime and most
    of Arrow release the GIL; each call runs the API's single-threaded session, so the numbers stay
    the API's), and one writer thread appends the scored batches in order. At most two batches wait
    at each stage, which bounds memory. Each part's stages are timed (``stage_times``: the stats
    hold each stage's total and the run's critical path).
    """
    started = time.perf_counter()
    result = ScoreResult()
    timer = _Timer()
    stages = StageTimes()
    # In the work dir when there is one (same file system, so the rename stays atomic): a run killed
    # mid-file leaves its partial files there, and the upload's next run clears them with it.
    tmp_dir = work_dir if work_dir is not None else result_path.parent
    tmp_result = tmp_dir / f".{result_path.name}.{os.getpid()}.tmp"
    tmp_rejected = tmp_dir / f".{rejected_path.name}.{os.getpid()}.tmp"
    tmp_about = tmp_dir / f".about.json.{os.getpid()}.tmp"
    writer: ResultWriter | None = None
    rejected_tables: list[pa.Table] = []
    scoring: deque[Future[_Scored]] = deque()
    writing: deque[Future[None]] = deque()
    monitor = (
        DriftMonitor({g: Compared(m.version, m.spec.columns, m.profile) for g, m in models.models.items()}, drift)
        if drift is not None
        else None
    )

    def collect(limit: int) -> None:
        """Hand finished scoring to the writer, in order; keep at most ``limit`` of each waiting."""
        while scoring and (len(scoring) > limit or scoring[0].done()):
            with timer("score_wait_s"):
                scored, rejected, rows = _unless_faulty(scoring.popleft(), "be scored")
            result.rows_total += rows
            if result.rows_total > max_rows:
                raise BadInput(f"the file has more than {max_rows:,} data rows (the limit per upload)")
            if rejected is not None:
                result.rows_rejected += rejected.num_rows
                rejected_tables.append(rejected)
            assert writer is not None
            writing.append(write_pool.submit(_write, writer, scored, stages, next(write_order)))
            if progress is not None:
                progress(result.rows_total, result.rows_rejected)
        while len(writing) > limit or (writing and writing[0].done()):
            with timer("write_wait_s"):
                writing.popleft().result()

    merged: list[str] = []
    write_order = itertools.count()  # the part each batch handed to the writer is
    part_rows = _part_rows(table.rows_expected, chunk_rows, table.columns_expected)
    batches = table.batches(part_rows, work_dir, merged, parsers, stages)
    result.data_sheet, result.header_row = table.data_sheet, table.header_row
    score_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="score")
    # One writer thread: batches reach the file in order, while the next ones are scored.
    write_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write")
    try:
        columns: Columns | None = None
        next_row = result.header_row + 1  # rows are numbered as the sheet (or the CSV's lines) numbers them
        part = 0
        while True:
            with timer("read_wait_s"), stages.timed("read", part) if table.fmt == "csv" else contextlib.nullcontext():
                batch = _unless_faulty(batches, "be read")
            if batch is None:
                break
            if columns is None:
                names = batch.schema.names
                columns = Columns.resolve(names, table.location, table.header_cells(names))
                writer = open_result(table.fmt, tmp_result, columns.headers, table.delimiter)
            numbers, next_row = row_numbers(batch, next_row, lines=table.fmt == "csv")
            scoring.append(
                score_pool.submit(_score_part, batch, columns, models, numbers, coverage, stages, part, monitor)
            )
            part += 1
            collect(limit=2)
        collect(limit=0)
        if columns is None or writer is None:
            raise BadInput("the file is empty: no header row with column names")
        result.drift = monitor.report() if monitor is not None else None
        result.about = about(
            upload,
            data_sheet=result.data_sheet,
            header_row=result.header_row,
            models=models.models,
            extra={"coverage": coverage, **({"drift": result.drift.summary()} if result.drift else {})},
            scored_at=time.time(),
        )
        with timer("finish_s"):
            rejected_tables = merged_cells.explain(rejected_tables, merged, columns.letters)
            writer.finish(rejected_tables, about_rows(result.about), drift_rows(result.drift))
            write_rejected_csv(tmp_rejected, rejected_tables, columns.kept, columns.headers)
            if about_path is not None:
                tmp_about.write_text(json.dumps(result.about, indent=2, ensure_ascii=False) + "\n")
        # The result last: once it is there, so are the files that go with it.
        os.replace(tmp_rejected, rejected_path)
        if about_path is not None:
            os.replace(tmp_about, about_path)
        os.replace(tmp_result, result_path)
    except (xlsx_reader.XlsxFormatError, csv_reader.CsvFormatError, XlsxWriteError) as exc:
        raise BadInput(str(exc)) from exc
    finally:
        for future in (*scoring, *writing):
            future.cancel()
        score_pool.shutdown(wait=True)
        write_pool.shutdown(wait=True)
        close = getattr(batches, "close", None)
        if close is not None:
            close()
        if writer is not None:
            writer.abort()
        tmp_result.unlink(missing_ok=True)
        tmp_rejected.unlink(missing_ok=True)
        tmp_about.unlink(missing_ok=True)
    result.model_versions = {g: m.version for g, m in models.models.items()}
    result.stats = {
        **timer.totals,
        **stages.summary(),
        **({"drift_s": round(monitor.seconds, 3)} if monitor is not None else {}),
        "total_s": round(time.perf_counter() - started, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        # The xlsx parser processes' own peaks, added up (forked: the run's pages they share are in
        # peak_rss_mb); the two together bound the run's memory.
        "workers_peak_rss_mb": round(stages.parsers_peak_mb, 1),
    }
    return result


_Scored = tuple[pa.RecordBatch, "pa.Table | None", int]
T = TypeVar("T")


def _unless_faulty(source: Iterator[T] | Future[T], what: str) -> T | None:
    """The next batch read, or a batch's scoring; whatever else than the storage (OSError) or a
    reason already worded for the user fails in there failed on this file's content, and a retry
    would meet it again: it is bad input, failed at once with the reason, never retried."""
    try:
        return source.result() if isinstance(source, Future) else next(source, None)
    except (BadInput, xlsx_reader.XlsxFormatError, csv_reader.CsvFormatError, XlsxWriteError, OSError, MemoryError):
        raise
    except BrokenProcessPool:  # a parser process died (killed for memory, say): the run's crash, retried as one
        raise
    except BaseException as exc:  # noqa: BLE001 - see the docstring: classified, not swallowed
        # A Rust panic in calamine arrives as pyo3's PanicException, a BaseException; from a parser
        # process, as a ParseFault that names it.
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        kind = exc.kind if isinstance(exc, ParseFault) else type(exc).__name__
        raise BadInput(f"the file could not {what} ({kind}: {exc})") from exc


def _part_rows(expected: int | None, chunk_rows: int, columns: int) -> int:
    """Rows per part: ``chunk_rows`` of the listings' 12 columns (the memory bound: a wider table
    gets as many cells per part, in fewer rows), but at least 8 parts for a file that says its
    size, so that a 100,000-row file too keeps both cores busy (a part's stages overlap only with
    other parts'), and at least 10,000 rows (each part costs a fixed ~10 ms)."""
    bound = max(1000, chunk_rows * _COLUMNS // max(columns, _COLUMNS))
    if expected is None:
        return bound
    return max(min(bound, -(-expected // 8)), min(bound, 10_000))


_COLUMNS = len(schema.INPUT_COLUMNS)  # chunk_rows counts rows of this many columns


def _score_part(
    batch: pa.RecordBatch,
    columns: Columns,
    models: PinnedModels,
    numbers: np.ndarray,
    coverage: float,
    stages: StageTimes,
    part: int,
    monitor: DriftMonitor | None = None,
) -> tuple[pa.RecordBatch, pa.Table | None, int]:
    with stages.timed("score", part):
        return _score_batch(batch, columns, models, numbers, coverage, lambda stage: stages.timed(stage, part), monitor)


def _write(writer: ResultWriter, batch: pa.RecordBatch, stages: StageTimes, part: int) -> None:
    with stages.timed("write", part):
        writer.write(batch)


Timed = Callable[[str], contextlib.AbstractContextManager[None]]


def _untimed(stage: str) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def _score_batch(
    batch: pa.RecordBatch,
    columns: Columns,
    models: PinnedModels,
    numbers: np.ndarray,
    coverage: float,
    timed: Timed = _untimed,
    monitor: DriftMonitor | None = None,
) -> tuple[pa.RecordBatch, pa.Table | None, int]:
    """Predictions for one batch; returns (result rows, rejected rows or None, non-blank rows)."""
    n = batch.num_rows
    blank = _blank_rows(batch)
    errors: dict[int, list[RowError]] = defaultdict(list)
    batch = _bound_text(batch, errors)
    frame = pd.DataFrame({c: _cell_values(batch.column(columns.source[c])) for c in schema.INPUT_COLUMNS})
    price = np.full(n, np.nan)
    low = np.full(n, np.nan)  # stays NaN (empty) where the model has no calibration
    high = np.full(n, np.nan)
    version = np.zeros(n, dtype=np.int64)
    model_id = np.full(n, None, dtype=object)
    out_of_range = np.full(n, None, dtype=object)  # stays None (empty) where nothing is, or no reference

    groups = frame[schema.GROUP_FIELD].astype("string").str.strip()
    assigned = np.zeros(n, dtype=bool)
    for group in schema.MODEL_GROUPS:
        rows = np.flatnonzero((groups == group).fillna(False).to_numpy(dtype=bool) & ~blank)
        if len(rows) == 0:
            continue
        assigned[rows] = True
        model = models.models.get(group)
        if model is None:
            reason = f"no model is served for group {group}: {models.unavailable.get(group, 'not loaded')}"
            for i in rows:
                errors[int(i)].append(RowError(int(i), schema.GROUP_FIELD, reason))
            continue
        _score_group(frame, rows, model, price, version, model_id, out_of_range, errors, timed, monitor)
        if model.calibration is not None:
            low[rows], high[rows] = conformal.bounds(price[rows], model.calibration.factor(coverage))
    for i in np.flatnonzero(~assigned & ~blank):
        raw = _plain(frame[schema.GROUP_FIELD].iloc[i])
        # Quoted as the features are (a number or boolean cell as such: 1, TRUE; text as 'D').
        message = "value is missing" if values.is_missing(raw) else f"unknown value {values.shown(raw)}"
        errors[int(i)].append(RowError(int(i), schema.GROUP_FIELD, message, schema.MODEL_GROUPS))

    if errors:  # a row rejected for a cell outside the features is not scored either
        price[np.fromiter(errors, dtype=np.int64)] = np.nan
    keep = np.flatnonzero(~blank)
    scored = np.isfinite(price)
    out = batch.select(columns.kept)
    out = out.append_column(PRICE, pa.array(price, mask=~scored))
    out = out.append_column(PRICE_LOW, pa.array(low, mask=~(scored & np.isfinite(low))))
    out = out.append_column(PRICE_HIGH, pa.array(high, mask=~(scored & np.isfinite(high))))
    out = out.append_column(OUT_OF_RANGE, pa.array(np.where(scored, out_of_range, None), pa.string()))
    out = out.append_column(VERSION, pa.array(version, mask=~scored))
    out = out.append_column(MODEL_ID, pa.array(np.where(scored, model_id, None), pa.string()))
    if len(keep) < n:
        out = out.take(pa.array(keep))

    rejected = None
    if errors:
        bad = np.array(sorted(errors), dtype=np.int64)
        reasons = ["; ".join(_describe(e) for e in errors[int(i)]) for i in bad]
        rejected = pa.Table.from_batches([batch.select(columns.kept).take(pa.array(bad))])
        rejected = rejected.add_column(0, ERRORS, pa.array(reasons, pa.string()))
        rejected = rejected.add_column(0, ROW, pa.array(numbers[bad]))
    return out, rejected, len(keep)


def _score_group(
    frame: pd.DataFrame,
    rows: np.ndarray,
    model: LoadedModel,
    price: np.ndarray,
    version: np.ndarray,
    model_id: np.ndarray,
    out_of_range: np.ndarray,
    errors: dict[int, list[RowError]],
    timed: Timed = _untimed,
    monitor: DriftMonitor | None = None,
) -> None:
    with timed("validate"):
        sub = frame.iloc[rows]
        matrix, valid, found = _validate(model.spec, sub)
    if monitor is not None:  # refused rows too: an unseen category is drift, not only a bad row
        with timed("drift"):
            monitor.add(model.group, matrix, sub.iloc[np.flatnonzero(~valid)])
    if len(matrix):
        with timed("predict"):
            price[rows[valid]] = model.predict_onnx(matrix)
        version[rows[valid]] = model.version
        model_id[rows[valid]] = model.model_id
        if model.out_of_range is not None:
            out_of_range[rows[valid]] = model.out_of_range(matrix)
    for err in found:
        errors[int(rows[err.row])].append(err)
    # encode_frame caps its report per column; rows past the cap are encoded again in slices no
    # larger than the cap, so every rejected row gets its reasons.
    unexplained = [i for i in rows[~valid] if int(i) not in errors]
    for start in range(0, len(unexplained), _MAX_ERRORS_PER_COLUMN):
        part = np.array(unexplained[start : start + _MAX_ERRORS_PER_COLUMN])
        _, _, more = _validate(model.spec, frame.iloc[part])
        for err in more:
            errors[int(part[err.row])].append(err)


def _validate(spec: FeatureSpec, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[RowError]]:
    """``spec.encode_frame``; should it fail on some rows (a fault, not a refusal), the frame is
    halved until the failing rows are alone, and each of them is rejected with the fault: one row
    never fails its file, and the other rows are validated as usual."""
    try:
        return spec.encode_frame(frame)
    except Exception as exc:  # noqa: BLE001 - turned into the row's rejection below
        if len(frame) <= 1:
            reason = f"could not be checked ({type(exc).__name__}: {exc}); please report this"
            empty = np.empty((0, len(spec.columns)), dtype=np.float32)
            return empty, np.zeros(len(frame), dtype=bool), [RowError(0, "row", reason)] * len(frame)
    half = len(frame) // 2
    first, second = _validate(spec, frame.iloc[:half]), _validate(spec, frame.iloc[half:])
    errors = first[2] + [replace(e, row=e.row + half) for e in second[2]]
    return np.concatenate([first[0], second[0]]), np.concatenate([first[1], second[1]]), errors


def _bound_text(batch: pa.RecordBatch, errors: dict[int, list[RowError]]) -> pa.RecordBatch:
    """Reject rows with a text cell longer than MAX_CELL_CHARS and cut those cells."""
    columns = list(batch.columns)
    for j, column in enumerate(columns):
        mixed = xlsx_cells.is_mixed(column.type)
        if mixed:
            column = xlsx_cells.as_text(column)  # measured on its text; the writer cuts its text cells
        elif not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        # Bytes bound characters from above: the character count is only needed past the limit.
        if (pc.max(pc.binary_length(column)).as_py() or 0) <= MAX_CELL_CHARS:
            continue
        lengths = pc.utf8_length(column).to_numpy(zero_copy_only=False)
        too_long = np.flatnonzero(np.nan_to_num(lengths.astype(np.float64)) > MAX_CELL_CHARS)
        if len(too_long) == 0:
            continue
        name = batch.schema.names[j]
        for i in too_long:
            message = (
                f"text of {int(lengths[i]):,} characters; a cell holds at most {MAX_CELL_CHARS:,} (cut to that length)"
            )
            errors[int(i)].append(RowError(int(i), name, message))
        if not mixed:
            columns[j] = pc.utf8_slice_codeunits(column, 0, MAX_CELL_CHARS)
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def _cell_values(column: pa.Array) -> pd.Series:
    """A column as validation sees it: each cell as the JSON API would receive it, so that both
    judge (and word a refusal of) a value alike. Numbers stay numbers and text text, also in a
    column of mixed kinds (its text would quote the number 0 as '0', and shows -2e-193 as -0);
    booleans are Python booleans (as numbers they would pass as 1 and 0 km; quoted TRUE, as JSON's
    true is); dates and durations become their text (as pandas numbers they would pass as counts
    of nanoseconds), as a JSON client sends them."""
    kind = column.type
    if xlsx_cells.is_mixed(kind):
        kinds = pc.struct_field(column, "kind").to_numpy(zero_copy_only=False)
        cells = xlsx_cells.as_text(column).to_numpy(zero_copy_only=False).astype(object)
        for code, field in ((xlsx_cells.NUMBER, "number"), (xlsx_cells.BOOLEAN, "boolean")):
            where = np.flatnonzero(kinds == code)
            if len(where):
                cells[where] = pc.struct_field(column, field).take(pa.array(where)).to_pylist()
        return pd.Series(cells, dtype=object)
    if pa.types.is_boolean(kind):
        return pd.Series(column.to_pylist(), dtype=object)
    if pa.types.is_temporal(kind):
        return pd.Series([None if v is None else str(v) for v in column.to_pylist()], dtype=object)
    return column.to_pandas()


def _describe(error: RowError) -> str:
    message = error.message
    if len(message) > 2 * _MAX_QUOTED_CHARS:
        # The middle goes: the start names the value, the end says what is wrong with it.
        message = message[:_MAX_QUOTED_CHARS] + "…" + message[-_MAX_QUOTED_CHARS // 2 :]
    text = f"{error.field}: {message}"
    if error.allowed is not None:
        text += allowed_note(error.allowed)
    return text


def _blank_rows(batch: pa.RecordBatch) -> np.ndarray:
    blank = np.ones(batch.num_rows, dtype=bool)
    for column in batch.columns:
        empty = pc.is_null(column)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            empty = pc.or_kleene(empty, pc.equal(pc.utf8_trim_whitespace(column), ""))
        blank &= empty.to_numpy(zero_copy_only=False).astype(bool)
    return blank


class _Timer:
    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)

    def __call__(self, name: str) -> _Span:
        return _Span(self, name)


class _Span:
    def __init__(self, timer: _Timer, name: str):
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timer.totals[self.name] = round(self.timer.totals[self.name] + time.perf_counter() - self.start, 3)
