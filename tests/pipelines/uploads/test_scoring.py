"""Scoring a whole file: the API's numbers for every valid row, reasons for every rejected one."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastexcel
import openpyxl
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from aimq_pipelines.uploads.input_table import BadInput, InputTable
from aimq_pipelines.uploads.results import OUTPUT_COLUMNS
from aimq_pipelines.uploads.scoring import PinnedModels, ScoreResult, score_file
from aimq_serving import schema
from aimq_serving.loaded_models import ModelCache
from aimq_serving.model_store import ModelStore
from tests.helpers.corpus import xlsx_via_xlsxwriter
from tests.helpers.out_of_range import beyond_training
from tests.helpers.paths import SAMPLES
from tests.helpers.upload_fixtures import api_record

Prices = Callable[[list[dict[str, Any]]], list[float]]


@pytest.fixture(scope="module")
def pinned(trained_store: ModelStore) -> PinnedModels:
    return PinnedModels.from_cache(ModelCache(trained_store))


def sample_rows() -> list[dict[str, Any]]:
    return fastexcel.read_excel(str(SAMPLES / "100_rows.xlsx")).load_sheet(0).to_pandas().to_dict("records")


def write_xlsx(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """Written with xlsxwriter, independent of the writer under test."""
    path.write_bytes(xlsx_via_xlsxwriter(header, rows))


def score(tmp_path: Path, source: Path, pinned: PinnedModels, **kwargs: Any) -> tuple[ScoreResult, Path, Path]:
    fmt = source.suffix[1:]
    result_path, rejected_path = tmp_path / f"result.{fmt}", tmp_path / "rejected.csv"
    result = score_file(
        InputTable.open(source, fmt, work_dir=tmp_path),
        result_path=result_path,
        rejected_path=rejected_path,
        models=pinned,
        max_rows=kwargs.pop("max_rows", 1_000_000),
        work_dir=tmp_path,
        **kwargs,
    )
    return result, result_path, rejected_path


def test_sample_file_scores_like_the_api(
    tmp_path: Path, pinned: PinnedModels, api_prices: Prices, api_client: TestClient
) -> None:
    progress: list[tuple[int, int]] = []
    result, result_path, rejected_path = score(
        tmp_path, SAMPLES / "100_rows.xlsx", pinned, progress=lambda d, r: progress.append((d, r))
    )
    assert (result.rows_total, result.rows_rejected) == (100, 0)
    assert progress[-1] == (100, 0)
    assert result.model_versions == {g: m.version for g, m in pinned.models.items()}

    book = fastexcel.read_excel(str(result_path))
    assert book.sheet_names == ["predictions", "rejected", "about"]
    scored = book.load_sheet(0).to_pandas()
    assert list(scored.columns) == [*schema.INPUT_COLUMNS, *OUTPUT_COLUMNS]
    rows = sample_rows()
    assert scored[list(schema.INPUT_COLUMNS)].to_dict("records") == rows  # the same rows, unchanged
    assert scored["predicted_price"].tolist() == api_prices(rows)
    online = api_client.post("/predict/onnx", json=[api_record(r) for r in rows]).json()
    for column in ("price_low", "price_high", "model_id"):  # the same range, and model, as the API's
        assert scored[column].tolist() == [o[column] for o in online]
    versions = [pinned.models[g].version for g in scored["model_group"]]
    assert scored["model_version"].tolist() == versions
    assert book.load_sheet(1).height == 0
    assert rejected_path.read_text().splitlines() == [
        ",".join(f'"{c}"' for c in ["row", "errors", *schema.INPUT_COLUMNS])
    ]


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_out_of_range_cells_name_the_fields_the_api_names(
    tmp_path: Path, pinned: PinnedModels, trained_store: ModelStore, api_client: TestClient, fmt: str
) -> None:
    """Issue 25: a row beyond its model's training data is priced and flagged, like online."""
    cases = beyond_training(trained_store, [api_record(r) for r in sample_rows()])
    records = [r for r, _ in cases]
    source = tmp_path / f"beyond.{fmt}"
    if fmt == "xlsx":
        write_xlsx(source, list(schema.INPUT_COLUMNS), [list(r.values()) for r in records])
    else:
        pd.DataFrame(records).to_csv(source, index=False)
    result, result_path, _ = score(tmp_path, source, pinned)
    assert result.rows_rejected == 0
    if fmt == "xlsx":
        scored = fastexcel.read_excel(str(result_path)).load_sheet(0).to_pandas()
    else:
        scored = pd.read_csv(result_path, keep_default_na=False, na_values=[""])
    online = api_client.post("/predict/onnx", json=records).json()
    cells = [None if pd.isna(c) else c for c in scored["out_of_range"]]
    assert cells == [", ".join(o["out_of_range"]) or None for o in online]
    assert cells == [", ".join(expected) or None for _, expected in cases]
    for column in ("predicted_price", "price_low", "price_high"):
        assert scored[column].tolist() == pytest.approx([o[column] for o in online], rel=1e-12)


def _bad_rows() -> tuple[list[str], list[list[Any]], dict[int, str]]:
    """The sample's header plus an id column; good rows and bad rows; sheet row -> expected reason."""
    header = ["listing_id", *schema.INPUT_COLUMNS]
    good = [[f"L{i}", *r.values()] for i, r in enumerate(sample_rows()[:6])]
    base = list(sample_rows()[0].values())  # group A, engine 180

    def variant(**changes: Any) -> list[Any]:
        row = dict(zip(schema.INPUT_COLUMNS, base))
        row.update(changes)
        return ["bad", *row.values()]

    rows = [
        good[0],
        variant(fuel_type="Steam"),  # sheet row 3
        good[1],
        variant(kilometers="lots"),  # row 5
        variant(age_in_months=-5),  # row 6
        [None] * len(header),  # row 7: blank, skipped
        variant(model_group="D"),  # row 8
        variant(model_group=None),  # row 9
        variant(model_group="B", model=120),  # row 10: B's models never saw engine 120
        good[2],
        variant(fuel_type="Steam", color="Plaid"),  # row 12: two reasons
        *good[3:],
    ]
    reasons = {
        3: "fuel_type: unknown value 'Steam' (allowed: ",
        5: "kilometers: 'lots' is not a number",
        6: "age_in_months: -5",
        8: "model_group: unknown value 'D' (allowed: A, B, C)",
        9: "model_group: value is missing (allowed: A, B, C)",
        10: "model: unknown value 120 (allowed: 140",
        12: "fuel_type: unknown value 'Steam'",
    }
    return header, rows, reasons


def test_bad_rows_are_reported_and_good_rows_scored(tmp_path: Path, pinned: PinnedModels, api_prices: Prices) -> None:
    header, rows, reasons = _bad_rows()
    source = tmp_path / "mixed.xlsx"
    write_xlsx(source, header, rows)
    result, result_path, rejected_path = score(tmp_path, source, pinned)
    assert result.rows_total == len(rows) - 1  # the blank row is not a row of data
    assert result.rows_rejected == len(reasons)

    scored = fastexcel.read_excel(str(result_path)).load_sheet(0).to_pandas()
    assert len(scored) == len(rows) - 1
    assert scored["listing_id"].tolist() == [r[0] for r in rows if r[0] is not None]
    good = scored[scored["listing_id"] != "bad"]
    assert good["predicted_price"].notna().all()
    records = good[list(schema.INPUT_COLUMNS)].to_dict("records")
    assert good["predicted_price"].tolist() == api_prices(records)
    assert scored.loc[scored["listing_id"] == "bad", "predicted_price"].isna().all()
    assert scored.loc[scored["listing_id"] == "bad", "model_version"].isna().all()

    rejected = fastexcel.read_excel(str(result_path)).load_sheet("rejected").to_pandas()
    assert rejected["row"].astype(int).tolist() == sorted(reasons)
    for row, reason in zip(rejected["row"].astype(int), rejected["errors"]):
        assert reasons[row] in reason, (row, reason)
    two = rejected.loc[rejected["row"] == 12, "errors"].item()
    assert "fuel_type" in two and "color: unknown value 'Plaid'" in two
    assert rejected["listing_id"].tolist() == ["bad"] * len(reasons)

    with open(rejected_path, newline="") as fh:
        listed = list(csv.DictReader(fh))
    assert [int(r["row"]) for r in listed] == sorted(reasons)
    assert [r["errors"] for r in listed] == rejected["errors"].tolist()


def test_csv_keeps_its_delimiter_and_extra_columns(tmp_path: Path, pinned: PinnedModels, api_prices: Prices) -> None:
    header, rows, reasons = _bad_rows()
    source = tmp_path / "mixed.csv"
    frame = pd.DataFrame([r for r in rows if r[0] is not None], columns=header)
    frame.to_csv(source, sep=";", index=False)
    result, result_path, rejected_path = score(tmp_path, source, pinned)
    assert (result.rows_total, result.rows_rejected) == (len(frame), len(reasons))

    out = pd.read_csv(result_path, sep=";", dtype={"listing_id": str}, keep_default_na=False, na_values=[""])
    assert list(out.columns) == [*header, *OUTPUT_COLUMNS]
    assert out["listing_id"].tolist() == frame["listing_id"].tolist()
    good = out[out["listing_id"] != "bad"]
    assert good["predicted_price"].tolist() == api_prices(good[list(schema.INPUT_COLUMNS)].to_dict("records"))
    assert out.loc[out["listing_id"] == "bad", "predicted_price"].isna().all()
    listed = pd.read_csv(rejected_path, keep_default_na=False, na_values=[""])
    # No blank row in this file: rows after the xlsx's blank row are one higher there.
    assert len(listed) == len(reasons)


def test_result_file_uploaded_again_replaces_its_predictions(tmp_path: Path, pinned: PinnedModels) -> None:
    (tmp_path / "a").mkdir()
    _, first, _ = score(tmp_path / "a", SAMPLES / "100_rows.xlsx", pinned)
    again = tmp_path / "again.xlsx"
    again.write_bytes(first.read_bytes())
    (tmp_path / "b").mkdir()
    result, second, _ = score(tmp_path / "b", again, pinned)
    assert result.rows_rejected == 0
    columns = fastexcel.read_excel(str(second)).load_sheet(0).to_pandas().columns.tolist()
    assert all(columns.count(c) == 1 for c in OUTPUT_COLUMNS)


def test_group_without_model_rejects_its_rows(tmp_path: Path, pinned: PinnedModels) -> None:
    partial = PinnedModels(
        models={g: m for g, m in pinned.models.items() if g != "C"},
        unavailable={"C": "model group C has no model yet; materialize the model chain first"},
    )
    result, result_path, _ = score(tmp_path, SAMPLES / "100_rows.xlsx", partial)
    group_c = sum(1 for r in sample_rows() if r["model_group"] == "C")
    assert result.rows_rejected == group_c > 0
    rejected = fastexcel.read_excel(str(result_path)).load_sheet("rejected").to_pandas()
    assert rejected["errors"].str.startswith("model_group: no model is served for group C").all()


def test_files_that_cannot_be_scored(tmp_path: Path, pinned: PinnedModels) -> None:
    wrong = tmp_path / "wrong.xlsx"
    write_xlsx(wrong, ["model_group", "price"], [["A", 1]])
    with pytest.raises(BadInput, match="missing column.*model, kilometers"):
        score(tmp_path, wrong, pinned)

    with pytest.raises(BadInput, match="more than 50 data rows"):
        score(tmp_path, SAMPLES / "100_rows.xlsx", pinned, max_rows=50)

    corrupt = tmp_path / "corrupt.xlsx"
    corrupt.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(BadInput, match="not a readable xlsx"):
        score(tmp_path, corrupt, pinned)

    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(BadInput, match="empty"):
        score(tmp_path, empty, pinned)

    ragged = tmp_path / "ragged.csv"
    ragged.write_text(",".join(schema.INPUT_COLUMNS) + "\nA,180\n")
    with pytest.raises(BadInput, match="row 2 has 2 fields where the header has 12"):
        score(tmp_path, ragged, pinned)
    # Nothing half-written is left behind.
    assert not list(tmp_path.glob("result.*")) and not list(tmp_path.glob(".*tmp"))


def test_header_only_file_succeeds_empty(tmp_path: Path, pinned: PinnedModels) -> None:
    source = tmp_path / "header.xlsx"
    write_xlsx(source, list(schema.INPUT_COLUMNS), [])
    result, result_path, _ = score(tmp_path, source, pinned)
    assert (result.rows_total, result.rows_rejected) == (0, 0)
    rows = list(openpyxl.load_workbook(result_path).active.iter_rows(values_only=True))
    assert rows == [(*schema.INPUT_COLUMNS, *OUTPUT_COLUMNS)]
