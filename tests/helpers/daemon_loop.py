"""Dagster's own sensor daemon loop, one iteration, over this repository's code location (loaded by a
code server subprocess, which reads the AIMQ_* environment): the real ticks of a test's instance."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import dagster as dg
import pytest
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.sensor import execute_sensor_iteration

from aimq_serving.settings import AimqSettings
from tests.helpers.paths import REPO


def use_code_location_env(monkeypatch: pytest.MonkeyPatch, settings: AimqSettings, **extra: str) -> None:
    """Make the code location's sensors read ``settings``' queue and uploads (and ``extra`` AIMQ_* settings)."""
    env = {
        "AIMQ_UPLOADS_EXCHANGE": settings.uploads_exchange,
        "AIMQ_UPLOADS_QUEUE": settings.uploads_queue,
        "AIMQ_UPLOADS_DEAD_LETTER_EXCHANGE": settings.uploads_dead_letter_exchange,
        "AIMQ_UPLOADS_DEAD_LETTER_QUEUE": settings.uploads_dead_letter_queue,
        "AIMQ_UPLOAD_DIR": str(settings.resolved_upload_dir),
        **extra,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def sensor_iteration(
    instance: dg.DagsterInstance, crash_flags: Mapping[str, Mapping[str, Exception]] | None = None
) -> None:
    """Every running sensor's tick, as the daemon's loop makes them; ``crash_flags``: Dagster's
    ``debug_crash_flags`` (per sensor, the point where the daemon dies)."""
    target = ModuleTarget(
        module_name="aimq_pipelines.definitions", attribute=None, working_directory=str(REPO), location_name="aimq"
    )
    with create_test_daemon_workspace_context(target, instance) as workspace:
        list(
            execute_sensor_iteration(
                workspace,
                logging.getLogger("test"),
                threadpool_executor=None,
                submit_threadpool_executor=None,
                debug_crash_flags=crash_flags,
            )
        )
