"""Scoring a whole file: the API's numbers for every valid row, reasons for every rejected one."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastexcel
import openpyxl
import pandas as pd
import pytest
import xlsxwriter
from fastapi.testclient import TestClient

from aimq_pipelines.uploads.input_table import BadInput, InputTable
from aimq_pipelines.uploads.results import OUTPUT_COLUMNS
from aimq_pipelines.uploads.scoring import PinnedModels, ScoreResult, score_file
from aimq_serving import schema
from aimq_serving.features import FeatureSpec
from aimq_serving.loaded_models import ModelCache
from aimq_serving.model_store import ModelStore
from aimq_tabular import xlsx_reader
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


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_a_feature_named_twice_fails_naming_both_columns(tmp_path: Path, pinned: PinnedModels, fmt: str) -> None:
    """Which of two kilometers columns is meant is the user's to say: never one picked silently."""
    header = [*schema.INPUT_COLUMNS, "Kilometers "]  # the 13th column, M, matched as kilometers is
    rows = [[*sample_rows()[0].values(), 5]]
    source = tmp_path / f"twice.{fmt}"
    if fmt == "xlsx":
        write_xlsx(source, header, rows)
    else:
        pd.DataFrame(rows, columns=header).to_csv(source, index=False)
    with pytest.raises(BadInput, match=r"^kilometers is in columns C and M; keep one$"):
        score(tmp_path, source, pinned)


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_every_header_comes_back_exactly_as_uploaded(tmp_path: Path, pinned: PinnedModels, fmt: str) -> None:
    header = ["note", *(f" {c.upper()} " for c in schema.INPUT_COLUMNS), "note", "note_1", "note"]
    rows = [["a", *sample_rows()[0].values(), "b", "c", "d"]]
    source = tmp_path / f"headers.{fmt}"
    if fmt == "xlsx":
        write_xlsx(source, header, rows)
    else:
        with open(source, "w", newline="") as fh:
            csv.writer(fh).writerows([header, *rows])
    result, result_path, rejected_path = score(tmp_path, source, pinned)
    assert (result.rows_total, result.rows_rejected) == (1, 0)
    if fmt == "xlsx":
        sheet = openpyxl.load_workbook(result_path).active
        written = [list(r) for r in sheet.iter_rows(values_only=True)]
    else:
        with open(result_path, newline="") as fh:
            written = list(csv.reader(fh))
    assert written[0] == [*header, *OUTPUT_COLUMNS]
    kept = written[1][: len(header)]
    assert [str(v) for v in kept[-4:]] == [sample_rows()[0]["climate"], "b", "c", "d"]
    with open(rejected_path, newline="") as fh:
        assert next(csv.reader(fh)) == ["row", "errors", *header]


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_a_number_too_large_for_an_integer_rejects_its_row_only(
    tmp_path: Path, pinned: PinnedModels, api_prices: Prices, fmt: str
) -> None:
    """1e20 as an engine model used to fail the whole file (a cast to int64), retried as transient."""
    good, bad = sample_rows()[0], {**sample_rows()[1], "model": 1e20}
    source = tmp_path / f"huge.{fmt}"
    if fmt == "xlsx":
        write_xlsx(source, list(schema.INPUT_COLUMNS), [list(good.values()), list(bad.values())])
    else:
        pd.DataFrame([good, bad]).to_csv(source, index=False)
    result, _, rejected_path = score(tmp_path, source, pinned)
    assert (result.rows_total, result.rows_rejected) == (2, 1)
    listed = pd.read_csv(rejected_path)
    assert listed["row"].tolist() == [3]
    # Quoted as the user gave it: a number in the xlsx, text in the CSV.
    shown = "1e+20" if fmt == "xlsx" else "'1e+20'"
    assert listed["errors"].item().startswith(f"model: unknown value {shown} (allowed: ")


def test_a_validator_fault_on_one_row_rejects_that_row_only(
    tmp_path: Path, pinned: PinnedModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault in validation (not a refusal: an exception no one expected) that one row triggers
    rejects that row with the fault; the file and its other rows are scored."""
    encode_frame = FeatureSpec.encode_frame

    def faulty(spec: FeatureSpec, frame: pd.DataFrame) -> Any:
        if (frame["kilometers"] == 4242).any():
            raise KeyError("a fault no one expected")
        return encode_frame(spec, frame)

    monkeypatch.setattr(FeatureSpec, "encode_frame", faulty)
    rows = [list(r.values()) for r in sample_rows()[:20]]
    rows[6][schema.INPUT_COLUMNS.index("kilometers")] = 4242  # sheet row 8
    source = tmp_path / "fault.xlsx"
    write_xlsx(source, list(schema.INPUT_COLUMNS), rows)
    result, result_path, rejected_path = score(tmp_path, source, pinned)
    assert (result.rows_total, result.rows_rejected) == (20, 1)
    listed = pd.read_csv(rejected_path)
    assert listed["row"].tolist() == [8]
    assert listed["errors"].item().startswith("row: could not be checked (KeyError: 'a fault no one expected')")
    scored = fastexcel.read_excel(str(result_path)).load_sheet(0).to_pandas()
    assert scored["predicted_price"].isna().tolist() == [i == 6 for i in range(20)]


def test_a_reader_fault_is_bad_input(tmp_path: Path, pinned: PinnedModels, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception of a type the reader does not word for the user still says what happened, as
    bad input: the same file would fail the same way again, so it is never retried."""

    def faulty(path: Path, **kwargs: Any) -> Iterator[Any]:
        raise IndexError("calamine met a cell it could not place")
        yield

    monkeypatch.setattr(xlsx_reader, "iter_xlsx_batches", faulty)
    with pytest.raises(BadInput, match=r"could not be read \(IndexError: calamine met a cell it could not place\)"):
        score(tmp_path, SAMPLES / "1_row.xlsx", pinned)


def test_a_merged_feature_cell_is_rejected_naming_its_range(tmp_path: Path, pinned: PinnedModels) -> None:
    """Only a merged range's first cell holds its value: the other rows are rejected, saying so
    (docs/batch.md, "Merged cells"), rather than given a value the file does not hold."""
    rows = [list(r.values()) for r in sample_rows()[:5]]
    fuel = schema.INPUT_COLUMNS.index("fuel_type")  # column D
    for row in rows[1:4]:  # sheet rows 3 to 5, merged below: a spreadsheet saves no value in the others
        row[fuel] = None
    book = io.BytesIO()
    with xlsxwriter.Workbook(book) as workbook:
        sheet = workbook.add_worksheet()
        sheet.write_row(0, 0, schema.INPUT_COLUMNS)
        for i, row in enumerate(rows, start=1):
            sheet.write_row(i, 0, row)
        sheet.merge_range(2, fuel, 4, fuel, "Diesel")  # D3:D5
    source = tmp_path / "merged.xlsx"
    source.write_bytes(book.getvalue())
    result, _, rejected_path = score(tmp_path, source, pinned)
    assert (result.rows_total, result.rows_rejected) == (5, 2)
    listed = pd.read_csv(rejected_path)
    assert listed["row"].tolist() == [4, 5]
    for reason in listed["errors"]:
        assert reason.startswith(
            "fuel_type: value is missing: the cell is in the merged range D3:D5, whose value only its first "
            "cell D3 holds; unmerge the range and fill in each cell (allowed: "
        )


def test_drift_is_judged_per_group_and_written_beside_the_predictions(tmp_path: Path, pinned: PinnedModels) -> None:
    from aimq_pipelines.models.synthetic import generate_listings
    from aimq_pipelines.monitoring.monitor import DriftSettings

    # group A: 200 rows, a fifth of them with a fuel the model never saw (refused, still counted);
    # group B: 5 rows, too few to judge
    a = generate_listings("A", 200, seed=41)
    a["fuel_type"] = a["fuel_type"].where(a.index % 5 != 0, "Hydrogen")
    frame = pd.concat([a, generate_listings("B", 5, seed=42)])[list(schema.INPUT_COLUMNS)]
    source = tmp_path / "drifted.csv"
    frame.to_csv(source, index=False)
    about_path = tmp_path / "about.json"
    result, _, _ = score(tmp_path, source, pinned, drift=DriftSettings(), about_path=about_path)
    assert result.rows_rejected == 40 and result.drift is not None
    assert (result.drift.verdict, result.drift.rows_judged) == ("drift", 200)
    groups = result.drift.groups
    assert [f.name for f in groups["A"].drifted_features] == ["fuel_type"]
    assert groups["A"].model_version == groups["A"].profile_version == pinned.models["A"].version
    assert groups["B"].verdict == "not_judged" and groups["B"].reason.startswith("too few rows to judge: 5 rows")
    assert "C" not in groups
    assert result.stats["drift_s"] >= 0
    # CSV: the verdict line goes with the provenance
    summary = f"drift: DRIFT in group A (v{groups['A'].model_version}): fuel_type (200 rows judged)"
    assert json.loads(about_path.read_text())["drift"] == summary

    xlsx = tmp_path / "drifted.xlsx"
    write_xlsx(xlsx, list(frame.columns), frame.values.tolist())
    result, result_path, _ = score(tmp_path, xlsx, pinned, drift=DriftSettings())
    book = fastexcel.read_excel(str(result_path))
    assert book.sheet_names == ["predictions", "drift", "rejected", "about"]
    sheet = book.load_sheet("drift").to_pandas()
    assert len(sheet) == 11 + 1  # group A's features, and group B's one row with its reason
    fuel = sheet[sheet["feature"] == "fuel_type"].iloc[0]
    assert fuel["drifted"] and fuel["unseen_share"] == pytest.approx(0.2) and fuel["value"] <= fuel["threshold"]
    b = sheet[sheet["model_group"] == "B"].iloc[0]
    assert b["group_verdict"] == "not_judged" and b["reason"].startswith("too few rows to judge")
