"""Peak memory of scoring a full-height, 40-column sheet: parts are bounded by cells, not rows.

    .venv/bin/python -m benchmarks.wide_sheet_memory [--rows 1048575] [--columns 40]

Trains models into a throw-away Redis prefix, writes the sheet with AIMQ's writer (the 12 listing
columns and more, every 4th extra one text) and scores it with ``score_file`` in a fresh process
(a file of this size is over the upload limit, so not through the API), as a run does: peak RSS
is that process's plus its parser processes' own (``workers_peak_rss_mb``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks import report
from benchmarks.stack import remove_throwaway, throwaway_env, train_in_process

_SCORE = """
import json, sys
from pathlib import Path
from aimq_pipelines.uploads.input_table import InputTable
from aimq_pipelines.uploads.scoring import PinnedModels, score_file
from aimq_serving.loaded_models import ModelCache
from aimq_serving.model_store import ModelStore
from aimq_serving.settings import AimqSettings

source, out = Path(sys.argv[1]), Path(sys.argv[2])
models = PinnedModels.from_cache(ModelCache(ModelStore.from_settings(AimqSettings())))
result = score_file(
    InputTable.open(source, "xlsx", work_dir=out), result_path=out / "result.xlsx",
    rejected_path=out / "rejected.csv", models=models, max_rows=1_048_575, work_dir=out,
)
print(json.dumps({"rows": result.rows_total, "rejected": result.rows_rejected, **result.stats}))
"""


def write_sheet(path: Path, rows: int, columns: int) -> None:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from aimq_pipelines.models.synthetic import generate_listings
    from aimq_serving import schema
    from aimq_tabular.xlsx_writer import XlsxTableWriter

    frame = pd.concat([generate_listings(g, 10_000, seed=11) for g in schema.MODEL_GROUPS], ignore_index=True)
    frame = frame[list(schema.INPUT_COLUMNS)]
    rng = np.random.default_rng(1)
    for j in range(columns - len(schema.INPUT_COLUMNS)):
        values = rng.integers(0, 100_000, size=len(frame))
        frame[f"extra_{j}"] = [f"note {v}" for v in values] if j % 4 == 0 else values.astype(float)
    block = pa.Table.from_pandas(frame, preserve_index=False)
    with XlsxTableWriter(path) as book:
        sheet = book.add_sheet("data", block.column_names)
        written = 0
        while written < rows:
            part = block.slice(0, min(block.num_rows, rows - written))
            sheet.write(part)
            written += part.num_rows
        sheet.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_048_575)
    parser.add_argument("--columns", type=int, default=40)
    parser.add_argument("--train-rows", type=int, default=100_000, help="rows per group to train on")
    args = parser.parse_args()

    tag = f"aimqbench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="aimq-wide-bench-"))
    os.environ.update(throwaway_env(tag, work))
    from aimq_serving.settings import AimqSettings

    settings = AimqSettings()
    try:
        train_in_process(args.train_rows)
        source = work / "wide.xlsx"
        write_sheet(source, args.rows, args.columns)
        out = work / "out"
        out.mkdir()
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _SCORE, str(source), str(out)], capture_output=True, text=True, check=True
        )
        seconds = time.perf_counter() - started
        stats = json.loads(done.stdout.strip().splitlines()[-1])
        size_mb = round(source.stat().st_size / 1e6, 1)
    finally:
        remove_throwaway(settings, work)
    peak = stats["peak_rss_mb"] + stats["workers_peak_rss_mb"]
    report.write(
        "wide_sheet_memory",
        "Scoring a full-height wide sheet: peak memory",
        "python -m benchmarks.wide_sheet_memory " + " ".join(sys.argv[1:]),
        ["rows", "columns", "file MB", "parts", "s", "CPU s", "process peak MB", "parsers' own MB", "peak MB", "load"],
        [
            [
                f"{stats['rows']:,}",
                args.columns,
                size_mb,
                int(stats["parts"]),
                round(seconds, 1),
                round(sum(stats.get(f"cpu_{stage}_s", 0.0) for stage in ("split", "parse", "score", "write")), 1),
                stats["peak_rss_mb"],
                stats["workers_peak_rss_mb"],
                round(peak, 1),
                round(os.getloadavg()[0], 1),
            ]
        ],
        extra={"stats": stats},
        notes="Peak MB = the scoring process's peak RSS + its parser processes' own peaks (each one's peak less the "
        "pages it shared when forked). 's' is the scoring process's, its imports included; 'CPU s' adds up the "
        "stages' CPU (split, parse, score, write); 'load' is the 1-minute load average after the run.",
    )


if __name__ == "__main__":
    main()
