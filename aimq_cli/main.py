"""The ``aimq`` command line.

Expected failures (a service down, an unknown group, no model yet) print one readable line and exit
non-zero; only bugs print a traceback.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from aimq_cli import supervise
from aimq_serving import schema
from aimq_serving.model_store import ModelStore, ModelStoreError
from aimq_serving.settings import AimqSettings

REPO_DAGSTER_YAML = Path(__file__).resolve().parents[1] / "dagster.yaml"


class CliError(Exception):
    """An expected failure: printed as one line, exit code 1."""


class _Parser(argparse.ArgumentParser):
    """Usage mistakes (an unknown group, a missing argument) in one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"aimq: error: {message} (see: {self.prog} --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
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

    args = parser.parse_args(argv)
    settings = AimqSettings()
    try:
        if args.command in ("score", "predict"):
            return _http_command(settings, args)
        if args.command == "up":
            return cmd_up(settings, args)
        if args.command == "train":
            return cmd_train(settings, args.group or list(schema.MODEL_GROUPS))
        if args.command == "models":
            return cmd_models(settings)
        if args.command == "rollback":
            store = ModelStore.from_settings(settings)
            version = store.rollback(args.group, args.version)
            print(f"group {args.group}: version {version} is current")
            return 0
    except (CliError, ModelStoreError) as exc:
        print(f"aimq: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


def _http_command(settings: AimqSettings, args: argparse.Namespace) -> int:
    from aimq_cli import client as cli_http

    api_url = args.api_url or settings.api_url
    api_key = args.api_key or (settings.api_key.get_secret_value() if settings.api_key is not None else None)
    if args.command == "predict":
        return cli_http.cmd_predict(api_url, args.record, args.engine, args.json, api_key=api_key)
    return cli_http.cmd_score(
        cli_http.ScoreOptions(args.file, args.out, args.force, api_url, args.timeout, api_key=api_key)
    )


# -- dagster instance ----------------------------------------------------------------------------
def dagster_home(settings: AimqSettings) -> Path:
    """DAGSTER_HOME from the environment, else data_dir/dagster_home seeded with the repo's dagster.yaml."""
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    home = settings.data_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(REPO_DAGSTER_YAML, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def cmd_train(settings: AimqSettings, groups: Sequence[str]) -> int:
    import dagster as dg

    from aimq_cli.progress import progress_logger
    from aimq_pipelines.definitions import build_resources
    from aimq_pipelines.models.assets import MODEL_CHAINS, group_name

    ModelStore.from_settings(settings).current_versions()  # fail fast, in one line, when Redis is down
    dagster_home(settings)
    started = time.perf_counter()
    # Recorded in the local instance, so the run and its materializations show in the Dagster UI;
    # the progress logger replaces Dagster's console logger with one line per step.
    cli_defs = dg.Definitions(
        assets=[a for a in MODEL_CHAINS if not isinstance(a, dg.AssetChecksDefinition)],
        asset_checks=[a for a in MODEL_CHAINS if isinstance(a, dg.AssetChecksDefinition)],
        jobs=[
            dg.define_asset_job(
                "train_models",
                selection=dg.AssetSelection.groups(*(group_name(g) for g in groups)),
                executor_def=dg.in_process_executor,
            )
        ],
        resources=build_resources(),
    )
    job = cli_defs.resolve_job_def("train_models").with_logger_defs({"progress": progress_logger})
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            run_config={"loggers": {"progress": {}}},
            instance=instance,
            raise_on_error=False,
            tags={"aimq/trigger": "cli"},
        )
    if not result.success:
        failures = [e for e in result.all_events if e.is_step_failure]
        failed = [e.step_key for e in failures]
        # The first failure's own reason (e.g. RedisAI refusing a model), not only where it happened.
        error = failures[0].step_failure_data.error if failures else None
        reason = f": {error.message.strip()}" if error is not None else ""
        raise CliError(
            f"training failed in {', '.join(failed) or 'the run'}{reason} (run {result.run_id}); see the Dagster UI"
        )
    store = ModelStore.from_settings(settings)
    for group in groups:
        info = store.info(group, store.current_version(group))
        m = info.metrics
        print(f"group {group}: version {info.version} is current  R2 {m['r2']:.4f}  MAPE {m['mape']:.2%}")
    print(f"trained {len(groups)} group(s) in {time.perf_counter() - started:.1f} s (run {result.run_id})")
    return 0


def cmd_models(settings: AimqSettings) -> int:
    store = ModelStore.from_settings(settings)
    listing = {group: store.list_versions(group) for group in schema.MODEL_GROUPS}
    print(f"{'group':5} {'version':>7} {'current':7} {'created (UTC)':19} {'R2':>7} {'MAPE':>7} {'ONNX kB':>8}")
    for group in schema.MODEL_GROUPS:
        versions = listing[group]
        if not versions:
            print(f"{group:5} {'-':>7} no model yet (run: aimq train)")
        for v in versions:
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v.created_at))
            print(
                f"{group:5} {v.version:>7} {'*' if v.current else '':7} {created:19} "
                f"{v.metrics.get('r2', float('nan')):>7.4f} {v.metrics.get('mape', float('nan')):>7.2%} "
                f"{v.onnx_bytes / 1000:>8.0f}"
            )
    return 0


# -- up ------------------------------------------------------------------------------------------
class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM reached `aimq up`: stop everything, exit 0."""


def _stop_on_signal(signum: int, frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


def cmd_up(settings: AimqSettings, args: argparse.Namespace) -> int:
    """Run the services until Ctrl-C or SIGTERM, then stop them all (``supervise.STOP_GRACE_S``).

    Handlers of its own for both signals: a process started with them ignored (a shell's
    background job, some CI runners and supervisors) inherits SIG_IGN, and Python installs its
    Ctrl-C handler only where SIGINT is not ignored. Killed outright, its services stop too
    (``aimq_cli.supervise``).
    """
    signal.signal(signal.SIGINT, _stop_on_signal)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    store = ModelStore.from_settings(settings)
    try:
        current = store.current_versions()
    except ModelStoreError as exc:
        raise CliError(f"{exc}. Start Redis (./dev up starts it) or set AIMQ_REDIS_URL.") from exc
    home = dagster_home(settings)
    missing = [g for g, v in current.items() if v is None]
    if missing and not args.skip_training:
        print(f"no model yet for group(s) {', '.join(missing)}: training them first")
        cmd_train(settings, missing)

    bin_dir = Path(sys.executable).parent
    module = ["-m", "aimq_pipelines.definitions"]
    commands = {
        "dagster-webserver": [
            str(bin_dir / "dagster-webserver"),
            *module,
            "-h",
            args.host,
            "-p",
            str(args.dagster_port),
        ],
        "dagster-daemon": [str(bin_dir / "dagster-daemon"), "run", *module],
        "api": [
            str(bin_dir / "uvicorn"),
            "--factory",
            "aimq_serving.api.app:create_app",
            "--host",
            args.host,
            "--port",
            str(args.api_port),
        ],
    }
    env = dict(os.environ)
    if "AIMQ_DAGSTER_UI_URL" not in env and args.host not in ("0.0.0.0", "::"):
        # Upload statuses link their run in the Dagster UI: the one started here.
        env["AIMQ_DAGSTER_UI_URL"] = f"http://{args.host}:{args.dagster_port}"
    procs: dict[str, subprocess.Popen] = {}
    watchdog = supervise.Watchdog()
    try:
        for name, command in commands.items():
            # Own session each (see aimq_cli.supervise): a stop reaches the run processes too.
            procs[name] = subprocess.Popen(
                command,
                start_new_session=True,
                env=env,
                preexec_fn=supervise.die_with_parent(os.getpid()),
            )
            watchdog.watch(procs[name].pid)
        _wait_until_serving(
            procs,
            {
                "api": f"http://{args.host}:{args.api_port}/health",
                "dagster-webserver": f"http://{args.host}:{args.dagster_port}/server_info",
            },
            args.start_timeout,
        )
        print(
            f"\nAIMQ is up (DAGSTER_HOME={home})\n"
            f"  Dagster UI  http://{args.host}:{args.dagster_port}\n"
            f"  Upload page http://{args.host}:{args.api_port}/\n"
            f"  API         http://{args.host}:{args.api_port}   docs: http://{args.host}:{args.api_port}/docs\n"
            "Ctrl-C stops everything started here.\n",
            flush=True,
        )
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise CliError(f"{name} exited with code {proc.returncode}; stopping the rest")
            time.sleep(0.5)
    except Stopped:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        _stop_all(procs)
        watchdog.release()


def _wait_until_serving(procs: dict[str, subprocess.Popen], urls: dict[str, str], timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    pending = dict(urls)
    while pending:
        for name, url in list(pending.items()):
            if procs[name].poll() is not None:
                raise CliError(f"{name} exited with code {procs[name].returncode} while starting")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    del pending[name]
            except httpx.TransportError:
                pass
        if pending and time.monotonic() > deadline:
            raise CliError(f"{', '.join(pending)} did not answer within {timeout_s:.0f} s")
        time.sleep(0.5)


def _stop_all(procs: dict[str, subprocess.Popen]) -> None:
    """Stop every service's process group; a second Ctrl-C or SIGTERM kills them at once."""
    groups = [proc.pid for proc in procs.values()]  # each leads its own session

    def kill_now(signum: int, frame: object) -> None:
        for pgid in groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGINT, kill_now)
    signal.signal(signal.SIGTERM, kill_now)
    supervise.stop_groups(groups, reap=lambda: [proc.poll() for proc in procs.values()])


if __name__ == "__main__":
    sys.exit(main())
