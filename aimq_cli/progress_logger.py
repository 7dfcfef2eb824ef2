"""A Dagster logger that prints one readable line per finished step or check (for `aimq train`)."""

from __future__ import annotations

import logging
import sys
import time

import dagster as dg


class _ProgressHandler(logging.Handler):
    def __init__(self, stream=sys.stdout):
        super().__init__(level=logging.DEBUG)
        self.stream = stream
        self.started: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        step = (meta.get("step_key") or "").replace("__", "/")
        if event is None:
            if record.levelno >= logging.INFO and step:
                self._print(f"  {step}: {meta.get('orig_message', record.getMessage())}")
            return
        kind = event.event_type_value
        if kind == "STEP_START":
            self.started[step] = time.perf_counter()
        elif kind == "STEP_SUCCESS":
            took = time.perf_counter() - self.started.get(step, time.perf_counter())
            self._print(f"✓ {step} ({took:.1f} s)")
        elif kind == "STEP_FAILURE":
            error = event.step_failure_data.error
            self._print(f"✗ {step}: {error.message.strip() if error else 'failed'}")
        elif kind == "ASSET_CHECK_EVALUATION":
            check = event.event_specific_data
            name = "/".join(check.asset_key.path) + ":" + check.check_name
            self._print(f"  check {name}: {'passed' if check.passed else 'FAILED ' + (check.description or '')}")

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


@dg.logger(description="One line per finished step and check, for terminals.")
def progress_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    log = logging.getLogger(f"aimq.progress.{init_context.run_id}")
    log.handlers = [_ProgressHandler()]
    log.setLevel(logging.DEBUG)
    log.propagate = False
    return log
