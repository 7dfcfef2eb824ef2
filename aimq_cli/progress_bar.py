"""A one-line progress display for terminals that degrades to plain lines in logs and pipes."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

_WIDTH = 30
# Without a terminal, a line per tenth of the work, or per this many seconds when the total is unknown.
_LOG_EVERY_S = 5.0


class ProgressLine:
    """On a terminal: one line redrawn in place (carriage return). Elsewhere (CI logs, a pipe): a
    line when the phase changes and then at most one per tenth of the work, so logs stay short."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        encoding = (getattr(self.stream, "encoding", None) or "ascii").lower()
        self.full, self.empty = ("█", "░") if "utf" in encoding else ("#", "-")
        self._drawn = False
        self._last: tuple[str, int | None] | None = None
        self._last_at = 0.0

    def update(self, label: str, fraction: float | None, text: str) -> None:
        """``fraction`` in [0, 1], or None when the total is not known yet."""
        if self.tty:
            self._draw(self._line(label, fraction, text))
            return
        tenth = None if fraction is None else int(fraction * 10)
        now = time.monotonic()
        changed = self._last is None or self._last[0] != label or self._last[1] != tenth
        if changed or (fraction is None and now - self._last_at >= _LOG_EVERY_S):
            self._last, self._last_at = (label, tenth), now
            print(self._line(label, fraction, text), file=self.stream, flush=True)

    def message(self, line: str) -> None:
        """A line that stays (above the bar, on a terminal)."""
        self.clear()
        print(line, file=self.stream, flush=True)

    def clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._drawn = False

    def _line(self, label: str, fraction: float | None, text: str) -> str:
        if fraction is None:
            return f"{label:<9} {text}"
        filled = round(fraction * _WIDTH)
        bar = self.full * filled + self.empty * (_WIDTH - filled)
        return f"{label:<9} {bar} {fraction:>4.0%}  {text}"

    def _draw(self, line: str) -> None:
        columns = shutil.get_terminal_size((100, 20)).columns
        self.stream.write("\r\x1b[2K" + line[: columns - 1])
        self.stream.flush()
        self._drawn = True
