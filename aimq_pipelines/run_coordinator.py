"""Dagster's run queue, launching a submitted run at once when the queue is empty and a slot is free.

Configured in dagster.yaml (``run_coordinator``, deploy/dagster/local.yaml) with the options of
Dagster's ``QueuedRunCoordinator``, which it is: the daemon's queue still launches every run that
waits, in order, within ``max_concurrent_runs``.

Why: the queue daemon looks for queued runs every ``dequeue_interval_seconds``, a whole number of
seconds, at least 1. For an upload scored in a quarter of a second that wait was the largest part of
its run's start (docs/batch.md, "Many small files"). A run submitted while nothing waits and fewer
than ``max_concurrent_runs`` runs are in progress is launched by the submitter (the sensor daemon for
an upload) as Dagster's ``DefaultRunCoordinator`` launches it; otherwise it is queued as before.

The queue daemon's look can also come every half second (``dequeue_interval_ms``; Dagster's option is
whole seconds): a run that waits in the queue (a burst) starts ~0.25 s sooner on average after a slot
frees. Its loop waits in steps of 0.5 s, so a shorter interval gains nothing.

Bounds kept: a run never jumps the queue (any queued run sends it there too), and a configuration
with rules the daemon applies per run (tag concurrency limits, op concurrency pools) always queues.
Two submitters deciding at the same moment may each see the last free slot: the limit can be
exceeded by one run for as long as those runs last. The daemon's own dequeue counts in-progress runs
the same way, so it launches nothing more until they are under the limit again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from aimq_pipelines.dagster_internals import ACTIVE_RUN_STATUSES

# Loaded with the instance that configures this coordinator: a Dagster that changed it fails there,
# saying so, rather than in a submitted run.
_ACTIVE_RUN_STATUSES = ACTIVE_RUN_STATUSES.load()


class PromptRunCoordinator(dg.QueuedRunCoordinator):
    _dequeue_interval_ms: int | None = None

    @classmethod
    def config_type(cls) -> dict[str, dg.Field]:
        return {
            **super().config_type(),
            "dequeue_interval_ms": dg.Field(
                dg.IntSource,
                is_required=False,
                description="The queue daemon's look, in milliseconds (at least 500: its loop waits in steps "
                "of 0.5 s); instead of dequeue_interval_seconds.",
            ),
        }

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Mapping[str, Any]) -> PromptRunCoordinator:
        interval_ms = config_value.get("dequeue_interval_ms")
        if interval_ms is not None and interval_ms < 500:
            raise dg.DagsterInvalidConfigError(
                f"run_coordinator.config.dequeue_interval_ms is {interval_ms}: at least 500 (the queue daemon's "
                "loop waits in steps of 0.5 s)",
                [],
                config_value,
            )
        coordinator = super().from_config_value(
            inst_data, {k: v for k, v in config_value.items() if k != "dequeue_interval_ms"}
        )
        coordinator._dequeue_interval_ms = interval_ms
        return coordinator

    @property
    def dequeue_interval_seconds(self) -> float:  # type: ignore[override] - the daemon takes any number
        if self._dequeue_interval_ms is not None:
            return self._dequeue_interval_ms / 1000
        return super().dequeue_interval_seconds

    def submit_run(self, context: dg.SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        if run.status != dg.DagsterRunStatus.NOT_STARTED or not self._slot_free():
            return super().submit_run(context)
        # As DefaultRunCoordinator: a launch that fails marks the run failed (run retries apply).
        self._instance.launch_run(run.run_id, context.workspace)
        launched = self._instance.get_run_by_id(run.run_id)
        assert launched is not None  # it was just launched
        return launched

    def _slot_free(self) -> bool:
        config = self.get_run_queue_config()
        storage = self._instance.event_log_storage
        pools = storage.supports_global_concurrency_limits and storage.get_concurrency_keys()
        if config.tag_concurrency_limits or pools:
            return False
        if self._instance.get_runs_count(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED])):
            return False
        limit = config.max_concurrent_runs
        if limit < 0:
            return True
        # The statuses the daemon counts as holding a slot (a run launching, running or canceling).
        return self._instance.get_runs_count(dg.RunsFilter(statuses=_ACTIVE_RUN_STATUSES)) < limit
