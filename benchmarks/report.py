"""Print a benchmark's table and write it as JSON and markdown under benchmarks/results/."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:,.4f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write(
    name: str,
    title: str,
    command: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    extra: dict[str, Any] | None = None,
    notes: str = "",
) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {
        "title": title,
        "command": command,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    table = markdown_table(columns, rows)
    (RESULTS / f"{name}.json").write_text(
        json.dumps(
            {**meta, "columns": list(columns), "rows": [list(r) for r in rows], **(extra or {})}, indent=2, default=str
        )
    )
    measured = f"Measured {meta['measured_at']} on {meta['machine']['cpus']} cores with `{command}`."
    md = f"### {title}\n\n{measured}\n\n{table}\n"
    if notes:
        md += f"\n{notes}\n"
    (RESULTS / f"{name}.md").write_text(md)
    print(md)
    return RESULTS / f"{name}.md"
