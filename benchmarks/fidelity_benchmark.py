"""What faithful cells cost: the upload reader and the result writer on 1M-row xlsx files.

    .venv/bin/python -m benchmarks.fidelity_benchmark [--rows 1000000] [--baseline d2b0528 ...]

Two files of ``--rows`` rows: "clean", the 12 model columns as the batch benchmark writes them,
and "messy", the same plus kept columns of mixed kinds in every part (a price column of numbers
with ``n/a`` and ``ask`` every 997 rows, a date-time column, a notes column of text). For each,
the reader (``locate_data`` + ``iter_xlsx_batches``, parts of 100k rows) and the writer
(``XlsxTableWriter``) run in a fresh process, once with each ``--baseline`` commit's code
(extracted with ``git archive``; repeat the option to compare with several) and once with this
tree's, one after the other in the same run, so the ratios compare like with like on a shared
machine. Scoring itself (validation, ONNX) is the same code before and after and is not part of
this measurement.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.batch_benchmark import generate

REPO = Path(__file__).resolve().parents[1]

_MEASURE = r"""
import json, sys, time
from pathlib import Path
import pyarrow as pa
from aimq_serving import schema
if Path("aimq_tabular").is_dir():
    from aimq_tabular import xlsx_reader
    from aimq_tabular.xlsx_writer import XlsxTableWriter
else:  # a commit from before the reshape (d2b0528): file I/O lived in aimq_serving.uploads
    from aimq_serving.uploads import xlsx_reader
    from aimq_serving.uploads.xlsx_writer import XlsxTableWriter
# The code measured is the checkout's in the working directory, never the installed tree's.
assert Path(xlsx_reader.__file__).resolve().is_relative_to(Path.cwd().resolve()), xlsx_reader.__file__
path, work = Path(sys.argv[1]), Path(sys.argv[2])
started = time.perf_counter()
kwargs = {}
if hasattr(xlsx_reader, "locate_data"):
    kwargs["location"] = xlsx_reader.locate_data(path, schema.INPUT_COLUMNS, work_dir=work)
rows, read_s, write_s = 0, 0.0, 0.0
with XlsxTableWriter(work / "out.xlsx") as book:
    sheet = None
    t = time.perf_counter()
    for batch in xlsx_reader.iter_xlsx_batches(path, work_dir=work, **kwargs):
        read_s += time.perf_counter() - t
        t = time.perf_counter()
        if sheet is None:
            sheet = book.add_sheet("predictions", batch.schema.names)
        sheet.write(batch)
        rows += batch.num_rows
        write_s += time.perf_counter() - t
        t = time.perf_counter()
    sheet.close()
total = time.perf_counter() - started
# VmHWM, not getrusage's ru_maxrss: that one survives exec, so it would report the parent's peak.
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
print(json.dumps({"rows": rows, "read_s": read_s, "write_s": write_s, "total_s": total, "peak_rss_mb": peak}))
"""


def messy(path: Path, rows: int) -> None:
    """The clean file's columns plus three kept columns of mixed kinds, with xlsxwriter."""
    import fastexcel
    import xlsxwriter

    clean = path.with_name(f"clean-{rows}.xlsx")
    if not clean.exists():
        generate(clean, rows)
    frame = fastexcel.read_excel(str(clean)).load_sheet(0).to_pandas()
    tmp = path.with_suffix(".tmp")
    book = xlsxwriter.Workbook(str(tmp), {"constant_memory": True})
    sheet = book.add_worksheet()
    stamp = book.add_format({"num_format": "yyyy-mm-dd hh:mm"})
    sheet.write_row(0, 0, ["asking", "listed", "notes", *frame.columns])
    start = dt.datetime(2024, 1, 1)
    columns = [frame[c].tolist() for c in frame.columns]
    for r, row in enumerate(zip(*columns), start=1):
        sheet.write(r, 0, ("n/a" if r % 2 else "ask") if r % 997 == 0 else 10_000 + r % 5_000)
        sheet.write_datetime(r, 1, start + dt.timedelta(minutes=r), stamp)
        sheet.write_string(r, 2, "N/A" if r % 13 == 0 else f"note {r % 50}")
        sheet.write_row(r, 3, row)
    book.close()
    tmp.rename(path)


def measure(path: Path, code: Path | None) -> dict[str, Any]:
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)  # ahead of the installed (this tree's) package
    with tempfile.TemporaryDirectory(prefix="aimq-fidelity-") as work:
        out = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(path), work],
            env=env,
            cwd=code or REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--baseline",
        action="append",
        help="commit to compare with, repeatable (default: d2b0528, before issue 15)",
    )
    parser.add_argument("--files-dir", type=Path, default=Path(tempfile.gettempdir()) / "aimq-fidelity-bench")
    args = parser.parse_args()
    baselines: list[str] = args.baseline or ["d2b0528"]
    args.files_dir.mkdir(parents=True, exist_ok=True)
    files = {"clean": args.files_dir / f"clean-{args.rows}.xlsx", "messy": args.files_dir / f"messy-{args.rows}.xlsx"}
    if not files["clean"].exists():
        generate(files["clean"], args.rows)
    if not files["messy"].exists():
        messy(files["messy"], args.rows)

    rows: list[list[Any]] = []
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="aimq-baseline-") as tmp:
        codes = {}
        for i, commit in enumerate(baselines):
            codes[commit] = Path(tmp) / f"baseline-{i}"
            codes[commit].mkdir()
            archive = subprocess.run(["git", "archive", commit], cwd=REPO, capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", codes[commit]], input=archive, check=True)
        for name, path in files.items():
            before = {commit: measure(path, code) for commit, code in codes.items()}
            after = measure(path, None)
            results[name] = {"before": before, "after": after}
            for label, m in [*before.items(), ("this tree", after)]:
                rows.append(
                    [
                        name,
                        label,
                        m["rows"],
                        round(m["read_s"], 2),
                        round(m["write_s"], 2),
                        round(m["total_s"], 2),
                        round(m["peak_rss_mb"]),
                    ]
                )
            for commit, m in before.items():
                rows.append(
                    [
                        name,
                        f"this tree / {commit}",
                        "",
                        round(after["read_s"] / m["read_s"], 2),
                        round(after["write_s"] / m["write_s"], 2),
                        round(after["total_s"] / m["total_s"], 2),
                        "",
                    ]
                )
    report.write(
        "fidelity",
        f"Faithful cells: reader + writer on {args.rows:,}-row xlsx files, {', '.join(baselines)} and this tree",
        f".venv/bin/python -m benchmarks.fidelity_benchmark --rows {args.rows}"
        + "".join(f" --baseline {commit}" for commit in baselines),
        ["file", "code", "rows", "read s", "write s", "total s", "peak RSS MB"],
        rows,
        results,
    )


if __name__ == "__main__":
    main()
