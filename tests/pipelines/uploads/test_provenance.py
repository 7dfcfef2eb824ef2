"""Provenance (issue 25): the xlsx result's ``about`` sheet, the CSV result's ``about.json`` (in a
zip with ``bundle=zip``, and at ``/uploads/{id}/about``), and each row's model short id; through the
API, RabbitMQ, Redis and the real scoring job."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import openpyxl
from fastapi.testclient import TestClient

from aimq_pipelines.uploads.results import OUTPUT_COLUMNS
from aimq_serving import schema
from aimq_serving.loaded_models import MODEL_ID_DIGITS
from aimq_serving.model_store import ModelStore
from aimq_serving.signing import sha256_hex
from tests.helpers.corpus import good_row, xlsx_via_xlsxwriter
from tests.helpers.scored_uploads import result_file


def _expected_models(store: ModelStore) -> dict[str, dict]:
    out = {}
    for group in schema.MODEL_GROUPS:
        stored = store.get(group)
        digest = sha256_hex(stored.onnx)
        out[group] = {"version": stored.info.version, "model_id": digest[:MODEL_ID_DIGITS], "onnx_sha256": digest}
    return out


def _check_about(about: dict, source: Path, store: ModelStore, data_sheet: str | None, header_row: int) -> None:
    assert about["original_name"] == source.name
    assert about["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert (about["data_sheet"], about["header_row"]) == (data_sheet, header_row)
    expected = _expected_models(store)
    assert {
        g: {k: m[k] for k in ("version", "model_id", "onnx_sha256")} for g, m in about["models"].items()
    } == expected
    assert all(m["created_at"].endswith("Z") for m in about["models"].values())
    for group, model in about["models"].items():  # the bounds out_of_range flags against
        reference = store.get(group).reference
        assert model["training_ranges"] == {n: [int(lo), int(hi)] for n, (lo, hi) in reference.numeric.items()}
    assert about["aimq_version"] and about["scored_at"].endswith("Z") and about["coverage"] == 0.9


def test_the_xlsx_result_has_an_about_sheet_and_model_ids(
    scored_upload: Callable[[Path], dict], upload_client: TestClient, trained_store: ModelStore, tmp_path: Path
) -> None:
    source = tmp_path / "listings.xlsx"
    rows = [good_row(i) for i in range(6)]
    source.write_bytes(xlsx_via_xlsxwriter(list(schema.INPUT_COLUMNS), rows))
    status = scored_upload(source)
    book = openpyxl.load_workbook(result_file(status, tmp_path), read_only=True)
    assert book.sheetnames == ["predictions", "drift", "rejected", "about"]
    sheet = {field: value for field, value in book["about"].iter_rows(min_row=2, values_only=True)}
    about = upload_client.get(status["about_url"]).json()
    _check_about(about, source, trained_store, "Sheet1", 1)
    assert sheet["upload_id"] == status["upload_id"] == about["upload_id"]
    # 6 rows (2 per group): too few to judge, said in the provenance as in the status
    assert sheet["drift"] == about["drift"] and about["drift"].startswith("drift: not judged (too few rows to judge")
    for group, model in about["models"].items():
        assert sheet[f"model {group} model_id"] == model["model_id"]
        assert sheet[f"model {group} onnx_sha256"] == model["onnx_sha256"]
        lo, hi = model["training_ranges"]["kilometers"]
        assert sheet[f"model {group} training_ranges kilometers"] == f"{lo} to {hi}"
    predictions = list(book["predictions"].iter_rows(values_only=True))
    header = list(predictions[0])
    assert header[-len(OUTPUT_COLUMNS) :] == list(OUTPUT_COLUMNS)
    for row in predictions[1:]:
        group = row[header.index("model_group")]
        assert row[-1] == about["models"][group]["model_id"]


def test_the_csv_result_downloads_with_its_about_json(
    scored_upload: Callable[[Path], dict], upload_client: TestClient, trained_store: ModelStore, tmp_path: Path
) -> None:
    source = tmp_path / "listings.csv"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([list(schema.INPUT_COLUMNS), *(good_row(i) for i in range(4))])
    source.write_text(out.getvalue())
    status = scored_upload(source)
    plain = status["result"]  # old clients: the same CSV as before, not a zip
    assert plain.startswith(b'"model_group",')
    response = upload_client.get(f"/uploads/{status['upload_id']}/result", params={"bundle": "zip"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    assert 'filename="listings_scored.zip"' in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as bundle:
        assert sorted(bundle.namelist()) == ["about.json", "listings_scored.csv"]
        assert bundle.read("listings_scored.csv") == plain
        about = json.loads(bundle.read("about.json"))
    assert about == upload_client.get(status["about_url"]).json()
    _check_about(about, source, trained_store, None, 1)
    ids = [r["model_id"] for r in csv.DictReader(io.StringIO(plain.decode()))]
    assert ids == [about["models"][r[0]]["model_id"] for r in (good_row(i) for i in range(4))]
    bad = upload_client.get(f"/uploads/{status['upload_id']}/result", params={"bundle": "tar"})
    assert bad.status_code == 422 and "bundle" in bad.text
