"""`aimq predict`: price one record or a batch (JSON) with the current models, through the API."""

from __future__ import annotations

import json
import sys
from typing import IO, Any

from aimq_cli.client import Api
from aimq_cli.errors import CliError


def read_records(argument: str | None, stdin: IO[str]) -> Any:
    if argument is None or argument == "-":
        if argument is None and stdin.isatty():
            raise CliError(
                "give the record as JSON, as an argument or on stdin, e.g. "
                'aimq predict \'{"model_group": "A", "model": 180, ...}\'  (aimq predict --help)'
            )
        text = stdin.read()
    else:
        text = argument
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"the input is not valid JSON: {exc}") from exc


def cmd_predict(
    api_url: str,
    argument: str | None,
    engine: str,
    raw_json: bool,
    stdin: IO[str] = sys.stdin,
    api_key: str | None = None,
) -> int:
    body = read_records(argument, stdin)
    batch = isinstance(body, list)
    path = {"onnx": "/predict/onnx", "pickle": "/predict/pickle"}[engine]
    with Api(api_url, api_key=api_key) as api:
        response = api.request("POST", path, "prediction refused", batch=batch, json=body)
    answer = response.json()
    if raw_json:
        print(json.dumps(answer))
        return 0
    rows = answer if batch else [answer]
    print(format_table(rows))
    return 0


def format_table(rows: list[dict[str, Any]]) -> str:
    """The priced rows as the terminal shows them: price and its range, then a line per row whose
    numbers lie outside the training data's range (the price is a guess there)."""
    coverage = rows[0]["coverage"] if rows else 0.9
    lines = [f"{'#':>4} {'group':5} {'version':>7} {'predicted price':>16} {f'{coverage:.0%} range':>25}"]
    notes = []
    for i, row in enumerate(rows):
        low, high = row.get("price_low"), row.get("price_high")
        span = "-" if low is None or high is None else f"{low:,.2f} - {high:,.2f}"
        lines.append(
            f"{i:>4} {row['model_group']:5} {row['model_version']:>7} {row['predicted_price']:>16,.2f} {span:>25}"
        )
        if row.get("out_of_range"):
            notes.append(f"row {i}: outside the training data's range: {', '.join(row['out_of_range'])}")
        elif low is None and row.get("range_note"):
            notes.append(f"row {i}: no range: {row['range_note']}")
    return "\n".join(lines + notes)
