"""``python -m aimq_serving.api [--workers N]``: serve the API on AIMQ_API_HOST:AIMQ_API_PORT.

The access log follows AIMQ_ACCESS_LOG (off by default), as under the deployments' uvicorn command line.

With several workers it gives them a fresh PROMETHEUS_MULTIPROC_DIR (unless one is set), so
/metrics reports the sum over all workers rather than whichever worker answered the scrape.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

import uvicorn

from aimq_serving.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m aimq_serving.api", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1, help="worker processes (about one per core)")
    args = parser.parse_args()
    settings = get_settings()
    own_dir = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_dir = tempfile.mkdtemp(prefix="aimq-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    try:
        uvicorn.run(
            "aimq_serving.api.app:create_app",
            factory=True,
            host=settings.api_host,
            port=settings.api_port,
            workers=args.workers,
            access_log=settings.access_log,
        )
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
