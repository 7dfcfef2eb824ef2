"""The ``aimq`` command line: its arguments, and which module runs each command.

Expected failures (a service down, an unknown group, no model yet) print one readable line and exit
non-zero; only bugs print a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from aimq_cli.errors import CliError
from aimq_serving import schema
from aimq_serving.settings import AimqSettings


class _Parser(argparse.ArgumentParser):
    """Usage mistakes (an unknown group, a missing argument) in one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"aimq: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aimq", description="AIMQ: train, serve and score price models.")
    sub = parser.add_subparsers(dest="command", required=True)
    # Options of the commands that talk to the API over HTTP.
    http = argparse.ArgumentParser(add_help=False)
    http.add_argument("--api-url", help="the AIMQ API (default: AIMQ_API_URL, else http://127.0.0.1:8000)")
    http.add_argument("--api-key", help="the API key, when the API requires one (default: AIMQ_API_KEY)")

    up = sub.add_parser("up", help="run Dagster (webserver + daemon) and the API locally; Ctrl-C stops all")
    up.add_argument("--api-port", type=int, default=8000)
    up.add_argument("--dagster-port", type=int, default=3000)
    up.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    up.add_argument("--skip-training", action="store_true", help="do not train models on first start")
    up.add_argument(
        "--start-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="give up when the webserver or the API does not answer within this long (default 300: "
        "seconds on a quiet machine, minutes on a busy one)",
    )

    train = sub.add_parser("train", help="materialize the model chain (all groups, or one)")
    train.add_argument("--group", choices=schema.MODEL_GROUPS, action="append", help="repeatable; default: all")

    sub.add_parser("models", help="list model versions per group")

    rollback = sub.add_parser("rollback", help="make an earlier model version current")
    rollback.add_argument("group", choices=schema.MODEL_GROUPS)
    rollback.add_argument("version", type=int, nargs="?", help="default: the version before the current one")

    score = sub.add_parser(
        "score",
        parents=[http],
        help="score an xlsx or CSV file through the API and download the result",
        description="Upload FILE, follow its scoring run with a progress bar, download the scored file "
        "and print a summary (rows scored and rejected with reasons, model versions).",
    )
    score.add_argument("file", type=Path, metavar="FILE", help="an xlsx workbook or a UTF-8 CSV file")
    score.add_argument(
        "--out", type=Path, help="where to write the result (default: FILE's folder, <stem>_scored.<ext>)"
    )
    score.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    score.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="stop waiting after this long (the upload goes on on the server); default: wait until done",
    )

    predict = sub.add_parser(
        "predict",
        parents=[http],
        help="price one record or a batch (JSON) with the current models",
        description="JSON from the argument, or from stdin when RECORD is '-' or left out: one object "
        "(one record with the 12 fields of the sample files) or an array of them.",
    )
    predict.add_argument("record", nargs="?", metavar="RECORD", help="JSON object or array; '-' reads stdin")
    predict.add_argument("--engine", choices=("onnx", "pickle"), default="onnx", help="default: onnx")
    predict.add_argument("--json", action="store_true", help="print the API's JSON answer instead of a table")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = AimqSettings()
    try:
        return _run(settings, args)
    except CliError as exc:
        return _fail(exc)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # The model-store commands' expected failures (Redis down, unknown version). Imported only
        # on a failure, so that predict and score never load the store (see _run).
        from aimq_serving.model_store import ModelStoreError

        if isinstance(exc, ModelStoreError):
            return _fail(exc)
        raise


def _fail(exc: Exception) -> int:
    print(f"aimq: error: {exc}", file=sys.stderr)
    return 1


def _run(settings: AimqSettings, args: argparse.Namespace) -> int:
    # Each command's module is imported when that command runs, not at the top: `up` and `train`
    # load Dagster and the code location (~1.9 s, `python -c "import aimq_cli.up"` on 2 cores),
    # `models` the model store (~1.2 s); `predict` and `score` need neither and start in ~0.15 s.
    if args.command == "up":
        from aimq_cli.up import cmd_up

        return cmd_up(settings, args)
    if args.command == "train":
        from aimq_cli.train import cmd_train

        return cmd_train(settings, args.group or list(schema.MODEL_GROUPS))
    if args.command in ("models", "rollback"):
        from aimq_cli.models import cmd_models, cmd_rollback

        return cmd_models(settings) if args.command == "models" else cmd_rollback(settings, args.group, args.version)
    # score and predict, the commands left: the API over HTTP
    api_url = args.api_url or settings.api_url
    api_key = args.api_key or (settings.api_key.get_secret_value() if settings.api_key is not None else None)
    if args.command == "predict":
        from aimq_cli.predict import cmd_predict

        return cmd_predict(api_url, args.record, args.engine, args.json, api_key=api_key)
    from aimq_cli.score import ScoreOptions, cmd_score

    return cmd_score(ScoreOptions(args.file, args.out, args.force, api_url, args.timeout, api_key=api_key))
