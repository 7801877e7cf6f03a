"""Readers: every supported format, damaged files keep their readable records."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from mixweave.data.readers import file_format, normalize_text, read_file, validate_record

RECORDS = [{"id": f"d{i}", "text": f"document number {i} " * 5} for i in range(5)]
JSONL = "".join(json.dumps(r) + "\n" for r in RECORDS).encode()


def values(path):
    return [r.value for r in read_file(str(path)) if r.reason is None]


def reasons(path):
    return [r.reason for r in read_file(str(path)) if r.reason is not None]


def test_formats_read_identically(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(JSONL)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(JSONL))
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(JSONL))
    (tmp_path / "a.jsonl.bz2").write_bytes(bz2.compress(JSONL))
    (tmp_path / "a.jsonl.xz").write_bytes(lzma.compress(JSONL))
    pq.write_table(pa.Table.from_pylist(RECORDS), tmp_path / "a.parquet")
    for name in ("a.jsonl", "a.jsonl.gz", "a.jsonl.zst", "a.jsonl.bz2", "a.jsonl.xz", "a.parquet"):
        assert values(tmp_path / name) == RECORDS, name
        assert reasons(tmp_path / name) == []


def test_file_format_by_suffix():
    assert file_format("x/Y.JSONL.GZ") == "jsonl.gz"
    assert file_format("x.jsonl.zst") == "jsonl.zst"
    assert file_format("x.parquet") == "parquet"
    assert file_format("x.jsonl") == "jsonl"
    assert file_format("x.jsonl.bz2") == "jsonl.bz2"
    assert file_format("x.jsonl.XZ") == "jsonl.xz"
    assert file_format("x.jsonl.zip") == "unsupported:.zip"


def test_blank_lines_skipped_and_last_line_without_newline_kept(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"text": "one"}\n\n   \n{"text": "two"}')
    records = list(read_file(str(path)))
    assert [r.value["text"] for r in records] == ["one", "two"]
    assert [r.record_index for r in records] == [0, 1]


def test_truncated_gzip_keeps_earlier_records(tmp_path):
    blob = gzip.compress(JSONL * 200)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(blob[: len(blob) // 2])
    records = list(read_file(str(path)))
    kept = [r for r in records if r.reason is None]
    bad = [r for r in records if r.reason is not None]
    assert len(kept) > 10
    assert [r.reason for r in bad] == ["truncated_file"]
    assert bad[0].record_index == len(kept) or bad[0].record_index == len(kept) + 1


def test_truncated_zstd_keeps_earlier_records(tmp_path):
    blob = zstandard.ZstdCompressor().compress(JSONL * 500)
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(blob[: len(blob) // 2])
    records = list(read_file(str(path)))
    assert sum(r.reason is None for r in records) > 10
    assert [r.reason for r in records if r.reason] == ["truncated_file"]


def test_normalize_text_nfc_and_newlines():
    decomposed = "Cafe\u0301\r\nline\rend"
    assert normalize_text(decomposed) == "Caf\u00e9\nline\nend"


def test_validate_record_keeps_extra_fields_in_meta():
    record, reason, _ = validate_record(
        {"id": 7, "text": "hi there", "url": "u", "meta": {"lang": "en"}}, source="s", default_id="s/f:0"
    )
    assert reason is None and record.doc_id == "7" and record.meta == {"lang": "en", "url": "u"}


def test_validate_record_default_id_and_custom_fields():
    record, reason, _ = validate_record({"body": "x y"}, source="s", default_id="s/f:3", text_field="body")
    assert reason is None and record.doc_id == "s/f:3" and record.text == "x y"
