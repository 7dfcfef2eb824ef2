"""Batch scoring: upload-to-result time and the run's peak memory for 10k, 100k and 1M-row files.

    .venv/bin/python -m benchmarks.batch_benchmark [--sizes 10000 100000 1000000] [--csv-sizes 1000000]

Runs the real platform as processes (the API under uvicorn, dagster-daemon launching run processes,
RabbitMQ, Redis) with a throw-away Redis prefix, queue names, DAGSTER_HOME and upload folder, over
models trained by the real pipeline. Each file goes the user's way: POST /upload, poll
GET /uploads/{id}, download GET /uploads/{id}/result; the clock runs from the first byte sent to the
last byte of the result received. Peak RSS is the run process's own (getrusage in the scoring op)
plus its parser processes' own (each one's peak less the pages it shared with the run when forked).

Each file's time is set against the file reader's in the same run: a single-threaded fastexcel read
of the whole xlsx sheet (calamine is single-threaded), or pyarrow's CSV reader with
``use_threads=False``, each in a fresh process, right after the file was scored. The run's own
stage times (``stage_times.py``: what each stage spent over all parts, and what the critical path
is made of) come from the upload's status record.

In the same run, on the 100k-row file and in this process: the readers (openpyxl read-only,
fastexcel on the whole sheet, AIMQ's bounded-memory reader) and the writers (xlsxwriter in
constant_memory mode, AIMQ's writer); and the original demo's way, one HTTP request per row to
/predict/onnx, for 1,000 rows. Input files are generated once with xlsxwriter constant_memory
(inline strings) and kept in --files-dir.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from aimq_cli import local_platform
from benchmarks import report
from benchmarks.stack import remove_throwaway, throwaway_env, train_in_process

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def generate(path: Path, rows: int) -> None:
    """Listings of all groups, shuffled: an xlsx written with xlsxwriter's constant_memory mode, or a CSV."""
    import pandas as pd
    import xlsxwriter

    from aimq_pipelines.models.synthetic import generate_listings
    from aimq_serving import schema

    per_group = [rows // 3 + (1 if i < rows % 3 else 0) for i in range(3)]
    frame = pd.concat(
        [generate_listings(g, n, seed=11) for g, n in zip(schema.MODEL_GROUPS, per_group)], ignore_index=True
    ).sample(frac=1.0, random_state=3)[list(schema.INPUT_COLUMNS)]
    tmp = path.with_suffix(".tmp")
    if path.suffix == ".csv":
        frame.to_csv(tmp, index=False)
        tmp.rename(path)
        return
    book = xlsxwriter.Workbook(str(tmp), {"constant_memory": True})
    sheet = book.add_worksheet()
    sheet.write_row(0, 0, list(frame.columns))
    columns = [frame[c].tolist() for c in frame.columns]
    for r, row in enumerate(zip(*columns), start=1):
        sheet.write_row(r, 0, row)
    book.close()
    tmp.rename(path)


class Platform:
    def __init__(self, env: dict[str, str], logs: Path):
        self.env = env
        self.logs = logs
        self.procs: list[subprocess.Popen] = []
        self.api = f"http://127.0.0.1:{local_platform.free_port()}"

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "wb") as out:
            proc = subprocess.Popen(
                command, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def __enter__(self) -> Platform:
        # As `aimq up` runs them: the warm code server, then the daemon loading the code from it.
        code_server = local_platform.CodeServer(port=local_platform.free_port())
        code_server.wait_loaded(self.start("code-server", code_server.command()), timeout_s=120)
        workspace = code_server.write_workspace(self.logs)
        self.start("dagster-daemon", local_platform.daemon_command(workspace))
        api = self.start(
            "api",
            [
                str(BIN / "uvicorn"),
                "--factory",
                "aimq_serving.api.app:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                self.api.rsplit(":", 1)[1],
                "--log-level",
                "warning",
            ],
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if api.poll() is not None:
                raise RuntimeError(f"the API exited; see {self.logs / 'api.log'}")
            try:
                if httpx.get(f"{self.api}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError("the API did not start")

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def score_via_api(
    api: str,
    path: Path,
    out: Path,
    timeout_s: float = 1800,
    poll_s: float = 0.2,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    with open(path, "rb") as fh:
        response = httpx.post(f"{api}/upload", files={"file": (path.name, fh)}, headers=headers, timeout=600)
    response.raise_for_status()
    uploaded = time.perf_counter()
    upload_id = response.json()["upload_id"]
    deadline = time.monotonic() + timeout_s
    while True:
        record = httpx.get(f"{api}/uploads/{upload_id}", headers=headers, timeout=10).json()
        if record["state"] in ("succeeded", "failed"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"upload {upload_id} not finished: {record}")
        time.sleep(poll_s)
    if record["state"] != "succeeded":
        raise RuntimeError(f"upload {upload_id} failed: {record['error']}")
    scored = time.perf_counter()
    with (
        httpx.stream("GET", f"{api}/uploads/{upload_id}/result", headers=headers, timeout=600) as result,
        open(out, "wb") as fh,
    ):
        for chunk in result.iter_bytes(1 << 20):
            fh.write(chunk)
    done = time.perf_counter()
    return {
        "record": record,
        "upload_s": uploaded - started,
        "until_scored_s": scored - started,
        "download_s": done - scored,
        "total_s": done - started,
        # From the broker's confirm to the scoring op's start: sensor tick, Dagster's queue, run start.
        "to_run_start_s": record["started_at"] - record["created_at"],
    }


def compare_readers_and_writers(path: Path, work: Path) -> list[list[Any]]:
    import fastexcel
    import openpyxl
    import pyarrow as pa
    import xlsxwriter

    from aimq_tabular.xlsx_reader import iter_xlsx_batches
    from aimq_tabular.xlsx_writer import XlsxTableWriter

    rows: list[list[Any]] = []

    def timed(name: str, kind: str, fn) -> Any:
        started = time.perf_counter()
        n, value = fn()
        seconds = time.perf_counter() - started
        rows.append([kind, name, n, round(seconds, 2), int(n / seconds)])
        return value

    def openpyxl_read() -> tuple[int, None]:
        book = openpyxl.load_workbook(path, read_only=True)
        n = sum(1 for _ in book.active.iter_rows(values_only=True)) - 1
        book.close()
        return n, None

    timed("openpyxl (read-only)", "read", openpyxl_read)
    table = timed(
        "fastexcel, whole sheet",
        "read",
        lambda: ((t := pa.Table.from_batches([fastexcel.read_excel(str(path)).load_sheet(0, eager=True)])).num_rows, t),
    )
    timed(
        "AIMQ reader (parts of 100k rows, 1 parser process)",
        "read",
        lambda: (sum(b.num_rows for b in iter_xlsx_batches(path, work_dir=work)), None),
    )

    def xlsxwriter_write() -> tuple[int, None]:
        book = xlsxwriter.Workbook(str(work / "xw.xlsx"), {"constant_memory": True})
        sheet = book.add_worksheet()
        sheet.write_row(0, 0, table.column_names)
        columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
        for r, row in enumerate(zip(*columns), start=1):
            sheet.write_row(r, 0, row)
        book.close()
        return table.num_rows, None

    def aimq_write() -> tuple[int, None]:
        with XlsxTableWriter(work / "aimq.xlsx") as book:
            book.add_sheet("predictions", table.column_names).write(table)
        return table.num_rows, None

    def rustpy_write() -> tuple[int, None]:
        from rustpy_xlsxwriter import FastExcel

        FastExcel(str(work / "rustpy.xlsx")).sheet("predictions", table.to_pandas()).save()
        return table.num_rows, None

    timed("xlsxwriter (constant_memory)", "write", xlsxwriter_write)
    timed("rustpy-xlsxwriter (from pandas)", "write", rustpy_write)
    timed("AIMQ writer", "write", aimq_write)

    # The writer's deflate, on the sheet XML it wrote: zlib (zipfile's own) against ISA-L (aimq_tabular.deflate).
    import zipfile
    import zlib

    from isal import isal_zlib

    with zipfile.ZipFile(work / "aimq.xlsx") as book:
        xml = book.read("xl/worksheets/sheet1.xml")
    for name, module in (("zlib level 1", zlib), ("ISA-L level 1 (AIMQ)", isal_zlib)):

        def deflate(module: Any = module) -> tuple[int, None]:
            compressor = module.compressobj(1, zlib.DEFLATED, -15)
            compressor.compress(xml)
            compressor.flush()
            return table.num_rows, None

        timed(name, "deflate the written sheet", deflate)
    return rows


_READ_XLSX = """
import sys, time, fastexcel
started = time.perf_counter()
fastexcel.read_excel(sys.argv[1]).load_sheet(0, eager=True)
print(time.perf_counter() - started)
"""
_READ_CSV = """
import sys, time, pyarrow.csv as pcsv
started = time.perf_counter()
pcsv.read_csv(sys.argv[1], read_options=pcsv.ReadOptions(use_threads=False))
print(time.perf_counter() - started)
"""


def reader_seconds(path: Path) -> float:
    """The whole file read by the format's reader on one thread, in a fresh process (its import not counted)."""
    code = _READ_CSV if path.suffix == ".csv" else _READ_XLSX
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


STAGES = ("split", "read", "parse", "validate", "drift", "predict", "score", "write")
CRITICAL = ("start", "split", "read", "parse", "validate", "drift", "predict", "score_other", "write", "wait", "finish")


def stage_rows(label: str, stats: dict[str, Any]) -> list[list[Any]]:
    """The run's stages: each one's time and CPU time over all parts (parallel parts add up)."""
    return [
        [label, "time", *(stats.get(f"stage_{s}_s", "") for s in STAGES)],
        [label, "CPU", *(stats.get(f"cpu_{s}_s", "") for s in STAGES)],
    ]


def critical_rows(label: str, stats: dict[str, Any]) -> list[list[Any]]:
    return [[label] + [stats.get(f"critical_{s}_s", "") for s in CRITICAL] + [stats.get("total_s", "")]]


def per_row_http(api: str, path: Path, rows: int = 1000) -> float:
    """The original demo's approach: one /predict/onnx request per row, sequentially."""
    import fastexcel

    frame = fastexcel.read_excel(str(path)).load_sheet(0, n_rows=rows).to_pandas()
    records = [{k: (int(v) if isinstance(v, float) else v) for k, v in r.items()} for r in frame.to_dict("records")]
    with httpx.Client(base_url=api, timeout=30) as client:
        started = time.perf_counter()
        for record in records:
            client.post("/predict/onnx", json=record).raise_for_status()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--csv-sizes", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--files-dir", type=Path, default=Path(tempfile.gettempdir()) / "aimq-batch-bench")
    parser.add_argument("--train-rows", type=int, default=100_000, help="rows per group to train on")
    args = parser.parse_args()

    args.files_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    cases = [("xlsx", size) for size in args.sizes] + [("csv", size) for size in args.csv_sizes]
    for fmt, size in cases:
        files[fmt, size] = args.files_dir / f"listings_{size}.{fmt}"
        if not files[fmt, size].exists():
            print(f"generating {files[fmt, size]} ...", flush=True)
            generate(files[fmt, size], size)

    tag = f"aimqbench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="aimq-batch-bench-"))
    os.environ.update({**throwaway_env(tag, work), "AIMQ_RATE_LIMIT_ENABLED": "false"})

    from aimq_serving.settings import AimqSettings

    settings = AimqSettings()
    print(f"training models ({args.train_rows} rows per group) ...", flush=True)
    train_in_process(args.train_rows)

    results: list[list[Any]] = []
    stage_table: list[list[Any]] = []
    critical_table: list[list[Any]] = []
    extra: dict[str, Any] = {"runs": {}}
    try:
        with Platform({**os.environ}, work) as platform:
            # Warm-up: the daemon's first tick and code server start are not part of any file's time.
            score_via_api(platform.api, files["xlsx", min(args.sizes)], work / "warmup.xlsx")
            for fmt, size in cases:
                print(f"scoring {size:,} rows ({fmt}) ...", flush=True)
                run = score_via_api(platform.api, files[fmt, size], work / f"result_{size}.{fmt}")
                reader_s = reader_seconds(files[fmt, size])
                load = os.getloadavg()[0]
                stats = run["record"]["stats"]
                extra["runs"][f"{fmt}-{size}"] = {**run, "reader_s": reader_s, "load_average_1min": load}
                label = f"{size:,} {fmt}"
                results.append(
                    [
                        label,
                        round(files[fmt, size].stat().st_size / 1e6, 1),
                        round(run["upload_s"], 2),
                        round(run["to_run_start_s"], 2),
                        round(stats["total_s"], 2),
                        round(run["download_s"], 2),
                        round(run["total_s"], 2),
                        round(reader_s, 2),
                        round(run["total_s"] / reader_s, 2),
                        int(size / run["total_s"]),
                        round(stats["peak_rss_mb"] + stats.get("workers_peak_rss_mb", 0.0), 1),
                        round(load, 1),
                    ]
                )
                stage_table.extend(stage_rows(label, stats))
                critical_table.extend(critical_rows(label, stats))
            one_k = per_row_http(platform.api, files["xlsx", min(args.sizes)])
        compare_on = files["xlsx", 100_000] if 100_000 in args.sizes else files["xlsx", min(args.sizes)]
        comparisons = compare_readers_and_writers(compare_on, work)
    finally:
        remove_throwaway(settings, work)

    biggest = max((r for r in results if r[0].endswith("xlsx")), key=lambda r: int(r[0].split()[0].replace(",", "")))
    per_row_total = one_k / 1000 * int(biggest[0].split()[0].replace(",", ""))
    extra.update(
        {
            "per_row_http_1000_s": one_k,
            "comparisons": comparisons,
            "bench_process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )
    compare_table = report.markdown_table(["step", "library", "rows", "s", "rows/s"], comparisons)
    stages_md = report.markdown_table(["file", "over all parts", *STAGES], stage_table)
    critical_md = report.markdown_table(["file", *CRITICAL, "run s"], critical_table)
    notes = (
        "upload-to-result = POST /upload (streamed) + sensor tick + Dagster queue + run start + scoring + download. "
        "'to run start' is the broker confirm to the scoring op's start (the sensor picks an upload up "
        "within ~0.1 s while it waits inside its tick; Dagster's run queue; a run process imports the code "
        "location before it starts). 'run s' is the scoring op (read, validate, "
        "predict, write); 'reader s' the format's reader alone on the whole file, on one thread, in a fresh "
        "process right after (fastexcel for xlsx, pyarrow.csv for CSV), and 'x reader' upload-to-result over it. "
        "Peak RSS is the run process's plus its parser processes' own (each one's peak less the pages it shared "
        "with the run when forked). "
        "'load' is the 1-minute load average after the file.\n\n"
        f"The run's stages, from its status record (seconds):\n\n{stages_md}\n\n"
        "Its critical path (seconds; adds up to the run): the chain of spans, followed back from the last write, "
        "each waiting for the latest-ending of its predecessors; 'wait' is time on that chain when no stage "
        "of it ran (no free core, the GIL, hand-overs), 'start' before the first part, 'finish' after the "
        f"last write (the rejected and about sheets, the zip's end):\n\n{critical_md}\n\n"
        f"The original demo's way, one /predict/onnx request per row: {one_k:.2f} s for 1,000 rows here, so "
        f"{per_row_total / 3600:.2f} h for {biggest[0]} rows, {per_row_total / biggest[6]:.0f}x the batch path.\n\n"
        f"Readers and writers on the 100k-row file, in this process:\n\n{compare_table}\n\n"
        "The machine (2 cores) is shared with other work while this runs: expect noise of tens of percent."
    )
    report.write(
        "batch",
        "Batch scoring: upload to result",
        "python -m benchmarks.batch_benchmark " + " ".join(sys.argv[1:]),
        [
            "rows",
            "file MB",
            "upload s",
            "to run start s",
            "run s",
            "download s",
            "upload-to-result s",
            "reader s",
            "x reader",
            "rows/s",
            "run peak RSS MB",
            "load",
        ],
        results,
        extra=extra,
        notes=notes,
    )


if __name__ == "__main__":
    main()
