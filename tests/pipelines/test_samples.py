"""The repository's sample workbooks, and the original demo's reference files where they are laid."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from aimq_pipelines.synthetic import sample_listings
from aimq_serving import schema
from aimq_serving.features import FeatureSpec
from tests.conftest import REFERENCE_SAMPLES, REPO, SAMPLES


def _make_samples_module():
    spec = importlib.util.spec_from_file_location("make_samples", REPO / "scripts" / "make-samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_samples_are_what_the_generator_writes(tmp_path: Path) -> None:
    make_samples = _make_samples_module()
    for name, rows in make_samples.SAMPLE_ROWS.items():
        make_samples.write_sample(tmp_path / name, rows)
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes(), f"rerun scripts/make-samples.py ({name})"
        committed = pd.read_excel(SAMPLES / name, keep_default_na=False)
        assert list(committed.columns) == list(schema.INPUT_COLUMNS)
        assert len(committed) == rows
        pd.testing.assert_frame_equal(committed, sample_listings(rows), check_dtype=False)


def test_samples_are_valid_input_of_every_group() -> None:
    frame = pd.read_excel(SAMPLES / "100_rows.xlsx", keep_default_na=False)
    _, valid, errors = FeatureSpec.from_schema().encode_frame(frame)
    assert valid.all() and not errors
    assert set(frame.model_group) == set(schema.MODEL_GROUPS)


@pytest.mark.skipif(not (REFERENCE_SAMPLES / "100_rows.xlsx").exists(),
                    reason=f"the original demo's reference files are not laid at {REFERENCE_SAMPLES}")
def test_reference_files_have_the_samples_columns() -> None:
    for name in ("1_row.xlsx", "100_rows.xlsx"):
        reference = pd.read_excel(REFERENCE_SAMPLES / name, keep_default_na=False)
        assert list(reference.columns) == list(pd.read_excel(SAMPLES / name, keep_default_na=False).columns)
        _, valid, errors = FeatureSpec.from_schema().encode_frame(reference)
        assert valid.all() and not errors
