"""Bad-input suite: each case names its quarantine reason, and input = kept + quarantined holds.

The cases run through :func:`mixweave.data.ingest.ingest_file` (the core that the Spark job maps
over files); ``tests/test_ingest_spark.py`` runs the same files through the real Spark job.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from mixweave.data.ingest import ingest_file
from mixweave.data.tokenizer import load_tokenizer

GOOD = json.dumps({"id": "good", "text": "A perfectly fine document about whales."}) + "\n"


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


# name -> (file name, bytes, expected quarantine reasons, expected kept count)
def _cases(tmp: Path) -> dict:
    many = "".join(json.dumps({"id": f"m{i}", "text": f"line {i} of a longer file"}) + "\n" for i in range(300)).encode()
    gz = gzip.compress(many)
    # zstd emits output per 128 KiB block: make the stream several blocks long so half of it decodes
    big = "".join(json.dumps({"id": f"z{i}", "text": f"entry {i * 7919 % 10007} of {i}"}) + "\n" for i in range(20000))
    zst = zstandard.ZstdCompressor().compress(big.encode())
    table = pa.Table.from_pylist([{"id": "p1", "text": "parquet text"}, {"id": "p2", "text": None}])
    pq.write_table(table, tmp / "ok.parquet")
    pq_bytes = (tmp / "ok.parquet").read_bytes()
    return {
        "invalid_json": ("a.jsonl", (GOOD + "{not json}\n").encode(), ["invalid_json"], 1),
        "json_array_not_object": ("b.jsonl", (GOOD + "[1, 2]\n").encode(), ["invalid_json"], 1),
        "invalid_utf8": ("c.jsonl", GOOD.encode() + b'{"text": "bad \xff\xfe bytes"}\n', ["invalid_utf8"], 1),
        "missing_text": ("d.jsonl", (GOOD + json.dumps({"id": "x", "body": "wrong field"}) + "\n").encode(), ["missing_text"], 1),
        "null_text": ("e.jsonl", (GOOD + json.dumps({"id": "x", "text": None}) + "\n").encode(), ["missing_text"], 1),
        "non_string_text": ("f.jsonl", (GOOD + json.dumps({"id": "x", "text": 42}) + "\n").encode(), ["non_string_text"], 1),
        "empty_text": ("g.jsonl", (GOOD + json.dumps({"id": "x", "text": ""}) + "\n").encode(), ["empty_text"], 1),
        "whitespace_text": ("h.jsonl", (GOOD + json.dumps({"id": "x", "text": " \n\t "}) + "\n").encode(), ["empty_text"], 1),
        "too_long": ("i.jsonl", (GOOD + json.dumps({"id": "x", "text": "w" * 5000}) + "\n").encode(), ["too_long"], 1),
        "bad_id_type": ("j.jsonl", (GOOD + json.dumps({"id": [1], "text": "list id"}) + "\n").encode(), ["bad_id"], 1),
        "last_line_cut_off": ("k.jsonl", (GOOD + '{"id": "x", "text": "cut').encode(), ["truncated_file"], 1),
        "truncated_gzip": ("l.jsonl.gz", gz[: len(gz) // 2], ["truncated_file"], None),
        "not_gzip_at_all": ("m.jsonl.gz", b"this is plain text pretending to be gzip\n", ["unreadable_file"], 0),
        "truncated_zstd": ("n.jsonl.zst", zst[: len(zst) // 2], ["truncated_file"], None),
        "corrupt_parquet": ("o.parquet", b"PAR1" + b"\x00" * 64 + b"PAR1", ["unreadable_file"], 0),
        "truncated_parquet": ("p.parquet", pq_bytes[: len(pq_bytes) // 2], ["unreadable_file"], 0),
        "parquet_null_text": ("q.parquet", pq_bytes, ["missing_text"], 1),
        "binary_garbage_jsonl": ("r.jsonl", bytes(b for b in range(256) if b != 10) * 4 + b"\n", ["invalid_utf8"], 0),
        "empty_file": ("s.jsonl", b"", [], 0),
    }


CASE_NAMES = [
    "invalid_json", "json_array_not_object", "invalid_utf8", "missing_text", "null_text", "non_string_text",
    "empty_text", "whitespace_text", "too_long", "bad_id_type", "last_line_cut_off", "truncated_gzip",
    "not_gzip_at_all", "truncated_zstd", "corrupt_parquet", "truncated_parquet", "parquet_null_text",
    "binary_garbage_jsonl", "empty_file",
]


def run_case(tmp_path: Path, name: str):
    file_name, content, expected_reasons, expected_kept = _cases(tmp_path)[name]
    path = _write(tmp_path / file_name, content)
    batches = list(ingest_file(source="s", path=str(path), file_index=0, tokenizer=load_tokenizer(), max_doc_bytes=1000))
    table = pa.Table.from_batches(batches) if batches else None
    rows = table.to_pylist() if table is not None else []
    return rows, expected_reasons, expected_kept


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_case(tmp_path, name):
    rows, expected_reasons, expected_kept = run_case(tmp_path, name)
    kept = [r for r in rows if r["kind"] == "doc"]
    quarantined = [r for r in rows if r["kind"] == "quarantine"]
    assert [r["reason"] for r in quarantined] == expected_reasons
    if expected_kept is not None:
        assert len(kept) == expected_kept
    else:
        assert len(kept) > 10  # a truncated stream keeps what came before the damage
    # accounting: every input record is exactly one row, kept or quarantined, with distinct indices
    assert len({r["record_index"] for r in rows}) == len(rows)
    for r in quarantined:
        assert r["detail"], "every quarantine row says why"
    for r in kept:
        assert r["n_tokens"] > 0 and r["n_bytes"] == len(r["text"].encode())


def test_at_least_fifteen_distinct_cases():
    assert len(CASE_NAMES) >= 15
    assert len({reason for name in CASE_NAMES for reason in _cases(Path("/tmp"))[name][2]}) >= 8
