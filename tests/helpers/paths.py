"""Where the tests find the checkout and its sample files."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The repository's own sample workbooks (scripts/make-samples.py): a clone anywhere has them.
SAMPLES = REPO / "samples"
# The original demo's two files, where this workplace lays them beside the clone: reference input that
# must score unchanged (tests/pipelines/models/test_samples.py). Never required.
REFERENCE_SAMPLES = Path(os.environ.get("AIMQ_REFERENCE_SAMPLES_DIR", REPO.parent / "shared" / "samples"))
