"""`aimq up`: the Dagster webserver, the daemon and the API as local processes until Ctrl-C or SIGTERM.

Trains the groups that have no model yet first (``aimq_cli.train``); how the services are kept from
outliving it is ``aimq_cli.supervise``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from aimq_cli import local_platform, supervise
from aimq_cli.errors import CliError
from aimq_cli.instance import dagster_home
from aimq_cli.train import cmd_train
from aimq_serving.model_store import ModelStore, ModelStoreError
from aimq_serving.settings import AimqSettings


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM reached `aimq up`: stop everything, exit 0."""


# How often `aimq up` reads the daemon's memory (AIMQ_DAEMON_MAX_RSS_MB): it grows by ~1 MB a minute.
MEMORY_CHECK_S = 10.0


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
    code_server = local_platform.CodeServer(port=local_platform.free_port())
    workspace = code_server.write_workspace(home)
    commands = {
        # First, and waited for (below): the webserver and the daemon load the code location from it.
        "code-server": code_server.command(),
        "dagster-webserver": local_platform.webserver_command(workspace, args.host, args.dagster_port),
        "dagster-daemon": local_platform.daemon_command(workspace),
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

    def start(name: str) -> None:
        # Own session each (see aimq_cli.supervise): a stop reaches the run processes too.
        procs[name] = subprocess.Popen(
            commands[name], start_new_session=True, env=env, preexec_fn=supervise.die_with_parent(os.getpid())
        )
        watchdog.watch(procs[name].pid)

    try:
        for name in commands:
            start(name)
            if name == "code-server":
                try:
                    code_server.wait_loaded(procs[name], args.start_timeout)
                except local_platform.CodeServerFailed as exc:
                    raise CliError(str(exc)) from exc
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
        next_memory_check = time.monotonic() + MEMORY_CHECK_S
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise CliError(f"{name} exited with code {proc.returncode}; stopping the rest")
            if settings.daemon_max_rss_mb and time.monotonic() >= next_memory_check:
                next_memory_check = time.monotonic() + MEMORY_CHECK_S
                daemon = procs["dagster-daemon"]
                used = supervise.resident_mb(daemon.pid)
                if used > settings.daemon_max_rss_mb:
                    print(
                        f"dagster-daemon uses {used:.0f} MB, more than AIMQ_DAEMON_MAX_RSS_MB "
                        f"({settings.daemon_max_rss_mb}): restarting it (Dagster's daemon grows by itself, "
                        "dagster-io/dagster#32070; nothing is lost)",
                        flush=True,
                    )
                    supervise.stop_groups([daemon.pid], reap=daemon.poll)
                    watchdog.forget(daemon.pid)
                    start("dagster-daemon")
            time.sleep(0.5)
    except Stopped:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        _stop_all(procs)
        watchdog.release()


def _wait_until_serving(procs: dict[str, subprocess.Popen], urls: dict[str, str], timeout_s: float) -> None:
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
