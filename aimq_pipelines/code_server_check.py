"""Health check of the Dagster code server: healthy only when the code location has LOADED.

`dagster api grpc-health-check` asks the gRPC health service, which a `dagster code-server start`
process answers SERVING as soon as it listens, also when loading `aimq_pipelines.definitions` failed:
the webserver and the daemon then start against a location that has no jobs, sensors or schedules.
This asks the server for its repositories, the call the webserver and daemon make, and fails on the
load error the server answers with (printed, so `docker inspect` and the pod's events show it).

    python -m aimq_pipelines.code_server_check --port 4000

Used by docker-compose.yml (code-server healthcheck) and k8s/base/code-server.yaml (startup and
readiness probes). Dagster has no public client for this call; `sync_list_repositories_grpc` is the
one its own webserver uses (aimq_pipelines.dagster_internals).
"""

from __future__ import annotations

import argparse
import sys

from aimq_pipelines import dagster_internals as internals


def location_error(host: str, port: int) -> str | None:
    """None when the server at host:port has loaded its code location, else why not."""
    client = internals.GRPC_CLIENT.load()(port=port, host=host)
    try:
        response = internals.LIST_REPOSITORIES.load()(client)
    except internals.USER_CODE_UNREACHABLE.load() as exc:
        return f"code server at {host}:{port} is unreachable: {exc}"
    except internals.USER_CODE_PROCESS_ERROR.load() as exc:
        return f"code location failed to load:\n{exc}"
    if not response.repository_symbols:
        return "code location loaded no repository"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", "-p", type=int, required=True)
    args = parser.parse_args(argv)
    error = location_error(args.host, args.port)
    if error is not None:
        print(error, file=sys.stderr)
        return 1
    print(f"code location at {args.host}:{args.port} loaded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
