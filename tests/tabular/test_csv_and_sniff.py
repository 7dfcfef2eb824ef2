"""CSV reading and the content-based type check."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from aimq_serving.api.intake.receive import clean_name
from aimq_tabular.csv_reader import HEAD_BYTES as CSV_HEAD_BYTES
from aimq_tabular.csv_reader import CsvFormatError, CsvHeader, iter_csv_batches, sniff_header
from aimq_tabular.sniff import HEAD_BYTES, UnsupportedType, detect


def header(path: Path) -> CsvHeader:
    with open(path, "rb") as fh:
        return CsvHeader.of(fh.read(CSV_HEAD_BYTES))


def read(path: Path, **kwargs) -> pa.Table:
    return pa.Table.from_batches(list(iter_csv_batches(path, header(path), **kwargs)))


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_delimiter_bom_quotes_and_multiline_cells(tmp_path: Path, delimiter: str) -> None:
    path = tmp_path / "x.csv"
    d = delimiter
    path.write_bytes(f'\ufeffa{d}b{d}a{d}\n1{d}"two{d} lines\nhere"{d}x{d}\n007{d}{d}""{d}z\n'.encode())
    table = read(path)
    assert table.column_names == ["a", "b", "a_1", "column_4"]
    assert table.column("a").to_pylist() == ["1", "007"]  # text, exactly as written
    # An empty cell is empty text: no text is taken for a missing value (N/A, null...).
    assert table.column("b").to_pylist() == [f"two{d} lines\nhere", ""]
    assert table.column("a_1").to_pylist() == ["x", ""]  # a quoted empty string is not missing


def test_bounded_batches(tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(20_000)))
    batches = list(iter_csv_batches(path, header(path), block_bytes=16_384))
    assert len(batches) > 5
    assert sum(b.num_rows for b in batches) == 20_000


def test_unreadable_csv(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"a,b\n1,2\n" + "é,3\n".encode("latin-1"))
    with pytest.raises(CsvFormatError, match="line 3 has a byte that is not UTF-8"):
        read(path)
    with pytest.raises(CsvFormatError, match="not UTF-8"):
        sniff_header("prix,modèle\n".encode("latin-1"))
    with pytest.raises(CsvFormatError, match="empty"):
        sniff_header(b"\n\n")


def test_detect() -> None:
    assert detect(b"PK\x03\x04rest") == "xlsx"
    assert detect(b"model_group,model\nA,180\n") == "csv"
    assert detect("\ufeffa;b\n".encode()) == "csv"
    # A head cut inside a multi-byte character is still UTF-8.
    head = ("é" * HEAD_BYTES).encode()[:HEAD_BYTES]
    assert detect(head) == "csv"
    for bad in (b"GIF89a", b"\x1f\x8b\x08", b"a,b\x00c"):
        with pytest.raises(UnsupportedType):
            detect(bad)


def test_clean_name_keeps_names_out_of_paths() -> None:
    assert clean_name("../../etc/passwd") == "passwd"
    assert clean_name("C:\\Users\\me\\list.xlsx") == "list.xlsx"
    assert clean_name("bad\x00name\n.csv") == "badname.csv"
    assert clean_name("") == "upload"
    assert len(clean_name("x" * 1000)) == 255
