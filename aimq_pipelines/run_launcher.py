"""A run launcher that starts small scoring runs in the warm code server and every other run in a
container (Docker) or a Kubernetes Job.

    run_launcher:
      module: aimq_pipelines.run_launcher
      class: SizeRoutedRunLauncher
      config:
        small_upload_bytes: 1048576        # optional: AIMQ_SMALL_UPLOAD_BYTES (1 MiB); 0: every run isolated
        isolated:                          # the launcher of everything else, configured as usual
          module: dagster_docker
          class: DockerRunLauncher
          config: {...}

Why: under compose each run was a container, under Kubernetes a pod: 3.8 s of a fresh interpreter's
start and imports in compose (docs/batch.md, "Many small files"), for a one-row file scored in 0.1 s.
The code server (``aimq_pipelines.code_server``) already has the code imported and forks each run
process from a warm forkserver, as under ``aimq up``. A scoring run (``score_upload``, ``score_uploads``)
whose uploads weigh at most ``small_upload_bytes`` (the run's ``aimq/upload_bytes`` tag, set by the
upload sensor from the messages) is launched there, exactly as Dagster's ``DefaultRunLauncher`` does
(``StartRun`` to the code server). Everything else (training, the purge, large files, a run without the
tag) goes to ``isolated`` with its isolation and limits (a container's memory limit, a pod's
requests).

Each run is tagged with where it went (``aimq/launched_in``), and what follows is routed by it:
cancel (the code server cancels its run process; the container or Job is stopped), run monitoring
(a run in the code server is healthy while that server still has its process: a restarted code
server has lost it, and the run is failed, then retried, as a container that died), the worker's
debug info, resuming. Run retries create a new run, launched by this launcher again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from aimq_pipelines import dagster_internals
from aimq_pipelines.uploads.jobs import SCORING_JOBS, UPLOAD_BYTES_TAG
from aimq_serving.settings import AimqSettings

LAUNCHED_IN_TAG = "aimq/launched_in"
IN_CODE_SERVER = "code-server"
ISOLATED = "isolated"
_SCORING_JOB_NAMES = frozenset(job.name for job in SCORING_JOBS)


def runs_in_code_server(run: dg.DagsterRun, small_upload_bytes: int) -> bool:
    """Whether ``run`` is a scoring run of uploads small enough for the code server."""
    size = run.tags.get(UPLOAD_BYTES_TAG, "")
    return run.job_name in _SCORING_JOB_NAMES and size.isdigit() and int(size) <= small_upload_bytes


class SizeRoutedRunLauncher(dg.DefaultRunLauncher):
    """Dagster's ``DefaultRunLauncher`` for small scoring runs, ``isolated`` for every other run."""

    def __init__(
        self,
        isolated: Mapping[str, Any],
        small_upload_bytes: int | None = None,
        inst_data: Any = None,
    ):
        super().__init__(inst_data=inst_data)
        self.small_upload_bytes = (
            AimqSettings().small_upload_bytes if small_upload_bytes is None else small_upload_bytes
        )
        self.isolated = dagster_internals.configured_class(
            isolated["module"], isolated["class"], isolated.get("config") or {}
        )

    @classmethod
    def config_type(cls) -> dict[str, dg.Field]:
        return {
            "small_upload_bytes": dg.Field(
                dg.IntSource,
                is_required=False,
                description="Scoring runs whose uploads weigh at most this many bytes start in the code server "
                "(default: AIMQ_SMALL_UPLOAD_BYTES); 0 sends every run to the isolated launcher.",
            ),
            "isolated": dg.Field(
                dg.Shape(
                    {
                        "module": str,
                        "class": str,
                        "config": dg.Field(dg.Permissive(), is_required=False, default_value={}),
                    }
                ),
                description="The launcher of every other run (e.g. dagster_docker.DockerRunLauncher), as in "
                "dagster.yaml's run_launcher.",
            ),
        }

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Mapping[str, Any]) -> SizeRoutedRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    def register_instance(self, instance: dg.DagsterInstance) -> None:
        super().register_instance(instance)
        self.isolated.register_instance(instance)

    def _in_code_server(self, run: dg.DagsterRun) -> bool:
        return run.tags.get(LAUNCHED_IN_TAG) == IN_CODE_SERVER

    def launch_run(self, context: Any) -> None:
        run = context.dagster_run
        warm = runs_in_code_server(run, self.small_upload_bytes)
        # Written before the launch, so that cancel and monitoring route a run however far it got
        # (a retry or a re-execution copies its parent's tags: overwritten here).
        self._instance.add_run_tags(run.run_id, {LAUNCHED_IN_TAG: IN_CODE_SERVER if warm else ISOLATED})
        if warm:
            super().launch_run(context)
        else:
            self.isolated.launch_run(context)

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is not None and self._in_code_server(run):
            return super().terminate(run_id)
        return self.isolated.terminate(run_id)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return self.isolated.supports_check_run_worker_health

    def check_run_worker_health(self, run: dg.DagsterRun) -> Any:
        if self._in_code_server(run):
            return dagster_internals.code_server_run_health(run)
        return self.isolated.check_run_worker_health(run)

    def get_run_worker_debug_info(self, run: dg.DagsterRun, include_container_logs: bool | None = True) -> str | None:
        if self._in_code_server(run):
            return None
        return self.isolated.get_run_worker_debug_info(run, include_container_logs=include_container_logs)

    @property
    def supports_resume_run(self) -> bool:
        return self.isolated.supports_resume_run

    def resume_run(self, context: Any) -> None:
        if self._in_code_server(context.dagster_run):
            # A run process that died with its code server cannot be resumed there; it is failed
            # and retried (run retries) instead.
            raise dg.DagsterInvariantViolationError("a run started in the code server cannot be resumed")
        self.isolated.resume_run(context)

    def join(self, timeout: int = 30) -> None:
        super().join(timeout)
        self.isolated.join(timeout)

    def dispose(self) -> None:
        super().dispose()
        self.isolated.dispose()
