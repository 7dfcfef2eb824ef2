"""The code location's gRPC server for `aimq up`, whose run processes start warm.

    python -m aimq_pipelines.code_server --host 127.0.0.1 --port 4266

The same server as ``dagster api grpc -m aimq_pipelines.definitions --location-name aimq`` with one
change: the process each run executes in is forked from a *forkserver* that imported Dagster and
this code location once, instead of spawned as a fresh interpreter that imports them again.

Why: under Dagster's default run launcher, the daemon asks the code server to start each run
(``StartRun``), and the server starts a ``multiprocessing`` "spawn" process. That process pays the
interpreter start and the imports of dagster and ``aimq_pipelines.definitions``: 1.7-1.9 s on 2
cores, 10 to 20 times the scoring of a small file (docs/batch.md, "Many small files"). Forked from
the warm forkserver, the run process imports nothing: launch to run start measured 0.58 s (median, the
rest is Dagster's own bookkeeping: the instance opened, the first events written).

What stays Dagster's own, unchanged: the run is launched through ``StartRun`` by the run queue, its
process is a ``multiprocessing.Process`` the server tracks (a run process that dies is reported as
a failed run, and run retries apply), cancel goes through ``CancelExecution``. The forkserver is a
single-threaded process that only imports (no connection, no thread pool, no ONNX session), so a
fork of it is as clean as a spawned interpreter; each run still opens its own connections.

Only the run processes of this server start this way. Compose and Kubernetes launch runs as
containers and Jobs (``DockerRunLauncher``, ``K8sRunLauncher``) and keep ``dagster code-server
start``.

Dagster has no option for the server's multiprocessing context: ``DagsterApiServer`` sets
``self._mp_ctx = multiprocessing.get_context("spawn")`` in its constructor, so that attribute is
replaced after the constructor ran (``aimq_pipelines.dagster_internals``, with every other use of
Dagster's internals). A test starts this server, runs a job through it and checks that the run's
process is a child of the forkserver.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import sys
import threading

from aimq_pipelines import dagster_internals

CODE_LOCATION_MODULE = "aimq_pipelines.definitions"
LOCATION_NAME = "aimq"
# Imported once by the forkserver, so that a run process forked from it imports none of them
# again (profiled with cProfile in the run process; the import costs are of a quiet machine):
# - Dagster's run execution path and the code location (1.8 s);
# - this module and what it imports: multiprocessing runs the parent's main module again in each
#   child, as __mp_main__ (here: Dagster's CLI);
# - the instance's storage classes and the defs-state storage (sqlalchemy, alembic, fsspec):
#   ``DagsterInstance.from_ref`` imports them in each run (0.5 s), see ``instance_modules``.
PRELOAD = (
    *dagster_internals.RUN_PATH_MODULES,
    CODE_LOCATION_MODULE,
    "aimq_pipelines.code_server",
    "upath.core",
    # - what each run would redo otherwise: Dagster's storage migrations read (aimq_pipelines/warm_runs.py).
    "aimq_pipelines.warm_runs",
)


def instance_modules() -> list[str]:
    """The modules of the classes the instance in DAGSTER_HOME is configured with (its storage,
    run launcher, compute logs ...): sqlite or postgres, as dagster.yaml says."""
    home = os.environ.get("DAGSTER_HOME")
    return dagster_internals.configured_class_modules(home) if home else []


def warm_context() -> multiprocessing.context.BaseContext:
    """The forkserver context with ``PRELOAD``; the forkserver itself starts in the background at
    once, so the first run does not wait for its imports."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([*PRELOAD, *instance_modules()])
    threading.Thread(target=multiprocessing.forkserver.ensure_running, name="aimq-forkserver", daemon=True).start()
    return context


# gRPC worker threads: every upload sensor's tick holds one while it waits for uploads (up to ~4 s;
# AIMQ_SENSOR_SHARDS, 8), and run launches, the other sensors and the webserver need theirs meanwhile.
# Dagster's default is the thread pool's (cores + 4: 6 on 2 cores). Compose and k8s run this module too.
MAX_WORKERS = 24


def main(argv: list[str] | None = None) -> None:
    """``dagster api grpc`` for this code location (extra arguments go to it: --host, --port ...)."""
    dagster_internals.replace_run_process_context(warm_context())
    extra = sys.argv[1:] if argv is None else argv
    if not {"-n", "--max-workers", "--max_workers"} & {a.split("=")[0] for a in extra}:
        extra = ["--max-workers", str(MAX_WORKERS), *extra]
    args = ["-m", CODE_LOCATION_MODULE, "--location-name", LOCATION_NAME, *extra]
    dagster_internals.GRPC_COMMAND.load().main(args=args, prog_name="python -m aimq_pipelines.code_server")


if __name__ == "__main__":
    main()
