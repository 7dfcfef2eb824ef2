"""Work every run process of the code server would repeat, done once in its forkserver, which imports
this module (``aimq_pipelines.code_server.PRELOAD``): the run processes forked from it inherit it.

- Dagster's SQL storages check and stamp each database's alembic revision against their migration
  scripts, and every check read all of the scripts again: five times in a run process (0.14 s, a sixth
  of a small upload's run, profiled with cProfile in the run process). Read once here
  (``dagster_internals.share_storage_migrations``).

Only reading and computing: no connection, thread or file is opened here that a fork could share.
"""

from __future__ import annotations

import logging

from aimq_pipelines import dagster_internals

try:
    dagster_internals.share_storage_migrations()
except Exception:  # noqa: BLE001 - a warm-up only: the forkserver must start (it survives an ImportError alone)
    logging.getLogger(__name__).warning(
        "run processes will read Dagster's storage migrations each (0.14 s more per run)", exc_info=True
    )
