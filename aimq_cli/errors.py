"""The one exception every `aimq` command raises for an expected failure."""

from __future__ import annotations


class CliError(Exception):
    """An expected failure (a service down, a file refused, no model yet): ``aimq_cli.main`` prints it
    as one line, ``aimq: error: ...``, and exits 1."""
