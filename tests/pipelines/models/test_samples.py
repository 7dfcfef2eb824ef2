"""The repository's sample workbooks, and the original demo's reference files where they are laid."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from aimq_pipelines.models.synthetic import sample_listings
from aimq_pipelines.uploads.input_table import InputTable
from aimq_pipelines.uploads.scoring import PinnedModels, score_file
from aimq_serving import schema
from aimq_serving.features import FeatureSpec
from aimq_serving.loaded_models import ModelCache
from aimq_serving.model_store import ModelStore
from tests.helpers.paths import REFERENCE_SAMPLES, REPO, SAMPLES


def _make_samples_module():
    spec = importlib.util.spec_from_file_location("make_samples", REPO / "scripts" / "make-samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_samples_are_what_the_generator_writes(tmp_path: Path) -> None:
    make_samples = _make_samples_module()
    for name, rows in make_samples.SAMPLE_ROWS.items():
        make_samples.write_sample(tmp_path / name, rows)
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes(), (
            f"rerun scripts/make-samples.py ({name})"
        )
        committed = pd.read_excel(SAMPLES / name, keep_default_na=False)
        assert list(committed.columns) == list(schema.INPUT_COLUMNS)
        assert len(committed) == rows
        pd.testing.assert_frame_equal(committed, sample_listings(rows), check_dtype=False)


def test_samples_are_valid_input_of_every_group() -> None:
    frame = pd.read_excel(SAMPLES / "100_rows.xlsx", keep_default_na=False)
    _, valid, errors = FeatureSpec.from_schema().encode_frame(frame)
    assert valid.all() and not errors
    assert set(frame.model_group) == set(schema.MODEL_GROUPS)


@pytest.mark.skipif(
    not (REFERENCE_SAMPLES / "100_rows.xlsx").exists(),
    reason=f"the original demo's reference files are not laid at {REFERENCE_SAMPLES}",
)
def test_reference_files_have_the_samples_columns() -> None:
    for name in ("1_row.xlsx", "100_rows.xlsx"):
        reference = pd.read_excel(REFERENCE_SAMPLES / name, keep_default_na=False)
        assert list(reference.columns) == list(pd.read_excel(SAMPLES / name, keep_default_na=False).columns)
        _, valid, errors = FeatureSpec.from_schema().encode_frame(reference)
        assert valid.all() and not errors


@pytest.mark.skipif(
    not (REFERENCE_SAMPLES / "100_rows.xlsx").exists(),
    reason=f"the original demo's reference files are not laid at {REFERENCE_SAMPLES}",
)
@pytest.mark.parametrize("name", ["1_row.xlsx", "100_rows.xlsx"])
def test_reference_files_score_unchanged(name: str, trained_store: ModelStore, tmp_path: Path) -> None:
    """The original demo's own files, as its users made them (Excel for Mac), score in full and come
    back with their cells as they were."""
    cache = ModelCache(trained_store)
    result = score_file(
        InputTable.open(REFERENCE_SAMPLES / name, "xlsx"),
        result_path=tmp_path / "result.xlsx",
        rejected_path=tmp_path / "rejected.csv",
        models=PinnedModels.from_cache(cache),
        max_rows=1000,
        work_dir=tmp_path,
    )
    reference = pd.read_excel(REFERENCE_SAMPLES / name, keep_default_na=False)
    assert (result.rows_total, result.rows_rejected) == (len(reference), 0)
    scored = pd.read_excel(tmp_path / "result.xlsx", sheet_name="predictions", keep_default_na=False)
    pd.testing.assert_frame_equal(scored[list(reference.columns)], reference)
    expected = [
        cache.get(r["model_group"]).predict_onnx(cache.get(r["model_group"]).spec.encode_records([r]))[0]
        for r in reference.to_dict("records")
    ]
    assert scored["predicted_price"].tolist() == pytest.approx(expected, rel=1e-6)
