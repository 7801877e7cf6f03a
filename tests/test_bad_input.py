"""Bad-input suite: each case names its quarantine reason, and input = kept + quarantined holds.

The cases run through :func:`mixweave.data.ingest.ingest_file` (the core that the Spark job maps
over files); ``tests/test_ingest_spark.py`` runs the same files through the real Spark job.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import io
import json
import lzma
import zipfile
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


def _records(prefix: str, n: int) -> bytes:
    """``n`` JSON lines with ids ``<prefix><i>`` (each case its own ids: the Spark test counts duplicates)."""
    return "".join(json.dumps({"id": f"{prefix}{i}", "text": f"entry {i * 7919 % 10007} of {i}"}) + "\n"
                   for i in range(n)).encode()


@functools.cache
def _blobs() -> dict:
    """The costly compressed inputs, built once per test session."""
    many = "".join(json.dumps({"id": f"m{i}", "text": f"line {i} of a longer file"}) + "\n" for i in range(300)).encode()
    # zstd emits output per 128 KiB block: make the stream several blocks long so half of it decodes
    big = "".join(json.dumps({"id": f"z{i}", "text": f"entry {i * 7919 % 10007} of {i}"}) + "\n" for i in range(20000))
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("inner.jsonl", GOOD)
    return {
        "many": many,
        "gz": gzip.compress(many),
        "zst": zstandard.ZstdCompressor().compress(big.encode()),
        "bz2": bz2.compress(_records("b", 300)),
        "big_bz2": bz2.compress(_records("B", 60000)),  # several 900 kB blocks: the first ones decode
        "xz": lzma.compress(_records("x", 300)),
        "big_xz": lzma.compress(_records("X", 3000)),
        "zip": zipped.getvalue(),
    }


# name -> (file name, bytes, expected quarantine reasons, expected kept count)
def _cases(tmp: Path) -> dict:
    blobs = _blobs()
    many, gz, zst, big_bz2 = blobs["many"], blobs["gz"], blobs["zst"], blobs["big_bz2"]
    table = pa.Table.from_pylist([{"id": "p1", "text": "parquet text"}, {"id": "p2", "text": None}])
    pq.write_table(table, tmp / "ok.parquet")
    pq_bytes = (tmp / "ok.parquet").read_bytes()
    deep = '{"text": "deep", "meta": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
    deep200 = '{"text": "deep", "meta": ' + "[" * 200 + "]" * 200 + "}\n"
    long_line = '{"text": "' + "w" * (2 << 20) + '"}\n' + '{"text": "the line after a too-long one"}\n'
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
        # hostile-input probe
        "lone_surrogate_text": ("t1.jsonl", (GOOD + '{"id": "x", "text": "bad \\ud800 here"}\n').encode(), ["invalid_unicode"], 1),
        "lone_surrogate_id": ("t2.jsonl", (GOOD + '{"id": "\\udfff", "text": "fine text"}\n').encode(), ["invalid_unicode"], 1),
        "lone_surrogate_meta_key": ("t3.jsonl", (GOOD + '{"id": "x", "text": "fine", "meta": {"k\\udc80": 1}}\n').encode(),
                                    ["invalid_unicode"], 1),
        "surrogate_pair_is_fine": ("t4.jsonl", (GOOD + '{"text": "emoji \\ud83d\\ude00 ok"}\n').encode(), [], 2),
        "nested_100k_deep": ("t5.jsonl", (GOOD + deep).encode(), ["too_deep"], 1),
        "nested_200_deep": ("t6.jsonl", (GOOD + deep200).encode(), ["too_deep"], 1),
        "bom_on_line_one": ("t7.jsonl", b"\xef\xbb\xbf" + b'{"id": "bom", "text": "a BOM before me"}\n', [], 1),
        "nan_in_meta": ("t8.jsonl", (GOOD + '{"id": "x", "text": "t", "score": NaN}\n').encode(), ["invalid_json"], 1),
        "minus_infinity_in_meta": ("t9.jsonl", (GOOD + '{"text": "t", "meta": {"s": -Infinity}}\n').encode(), ["invalid_json"], 1),
        "text_is_a_huge_int": ("u1.jsonl", (GOOD + '{"text": ' + "9" * 5000 + "}\n").encode(), ["invalid_json"], 1),
        "id_is_a_float": ("u2.jsonl", (GOOD + '{"id": 1.5, "text": "t"}\n').encode(), ["bad_id"], 1),
        "raw_nul_byte": ("u3.jsonl", GOOD.encode() + b'{"text": "a\x00b"}\n', ["invalid_json"], 1),
        "escaped_nul_is_text": ("u4.jsonl", (GOOD + '{"text": "a\\u0000b"}\n').encode(), [], 2),
        "crlf_line_endings": ("u5.jsonl", (GOOD + '{"text": "windows"}\n').replace("\n", "\r\n").encode(), [], 2),
        "bz2": ("u6.jsonl.bz2", blobs["bz2"], [], 300),
        "xz": ("u7.jsonl.xz", blobs["xz"], [], 300),
        "truncated_bz2": ("u8.jsonl.bz2", big_bz2[: len(big_bz2) * 2 // 3], ["truncated_file"], None),
        "truncated_xz": ("u9.jsonl.xz", blobs["big_xz"][:-40], ["truncated_file"], None),
        "zip_archive": ("v1.jsonl.zip", blobs["zip"], ["unsupported_compression"], 0),
        "gzip_named_jsonl": ("v2.jsonl", gzip.compress(b'{"id": "gz", "text": "gzip bytes in a .jsonl"}\n'), [], 1),
        "line_over_the_line_limit": ("v3.jsonl", (GOOD + long_line).encode(), ["too_long"], 2),
    }


CASE_NAMES = [
    "invalid_json", "json_array_not_object", "invalid_utf8", "missing_text", "null_text", "non_string_text",
    "empty_text", "whitespace_text", "too_long", "bad_id_type", "last_line_cut_off", "truncated_gzip",
    "not_gzip_at_all", "truncated_zstd", "corrupt_parquet", "truncated_parquet", "parquet_null_text",
    "binary_garbage_jsonl", "empty_file",
    "lone_surrogate_text", "lone_surrogate_id", "lone_surrogate_meta_key", "surrogate_pair_is_fine", "nested_100k_deep",
    "nested_200_deep", "bom_on_line_one", "nan_in_meta", "minus_infinity_in_meta", "text_is_a_huge_int", "id_is_a_float",
    "raw_nul_byte", "escaped_nul_is_text", "crlf_line_endings", "bz2", "xz", "truncated_bz2", "truncated_xz",
    "zip_archive", "gzip_named_jsonl", "line_over_the_line_limit",
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
        assert len(r["raw"].encode()) <= 2048 + 3, "the quarantine row holds a bounded preview, never the record"
    for r in kept:
        assert r["n_tokens"] > 0 and r["n_bytes"] == len(r["text"].encode())


def test_at_least_fifteen_distinct_cases():
    assert len(CASE_NAMES) >= 15
    assert len({reason for name in CASE_NAMES for reason in _cases(Path("/tmp"))[name][2]}) >= 8
