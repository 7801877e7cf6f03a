"""Hostile input for the readers and the glob expansion: bombs, symlink loops, ids, exclusions.

In-process only (no Spark); ``tests/test_ingest_hostile_spark.py`` runs the job-level cases.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pytest
import zstandard

from mixweave.data.ingest import ingest_file
from mixweave.data.readers import expand_glob, glob_root, max_line_bytes, read_file, split_glob, split_lines
from mixweave.data.tokenizer import load_tokenizer
from mixweave.errors import InputError
from mixweave.jobs.ingest import SourceSpec, expand_sources

BOMB_MB = 64  # twice the reader's allowed peak below: a reader that held the line would fail
MAX_DOC_BYTES = 1000
FIRST = json.dumps({"id": "first", "text": "before the bomb"}) + "\n"
LAST = json.dumps({"id": "last", "text": "after the bomb"}) + "\n"


def _write_bomb(path: Path, opener) -> Path:
    """A compressed file: one good line, one line of BOMB_MB MB of 'a', one good line (streamed)."""
    block = b"a" * (1 << 20)
    with opener(path) as fh:
        fh.write(FIRST.encode() + b'{"text": "')
        for _ in range(BOMB_MB):
            fh.write(block)
        fh.write(b'"}\n' + LAST.encode())
    return path


OPENERS = {
    "x.jsonl.gz": lambda p: gzip.open(p, "wb", compresslevel=1),
    "x.jsonl.zst": lambda p: zstandard.ZstdCompressor(level=1).stream_writer(open(p, "wb")),
    "x.jsonl.bz2": lambda p: bz2.open(p, "wb", compresslevel=1),
    "x.jsonl.xz": lambda p: lzma.open(p, "wb", preset=0),
}


@pytest.mark.parametrize("name", sorted(OPENERS))
def test_decompression_bomb_is_skipped_in_bounded_memory(tmp_path, name):
    path = _write_bomb(tmp_path / name, OPENERS[name])
    assert path.stat().st_size < 2 << 20  # a real bomb: MBs on disk at most, 64 MB inside
    tracemalloc.start()
    try:
        records = list(read_file(str(path), max_doc_bytes=MAX_DOC_BYTES))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"peak {peak / 2**20:.1f} MiB while reading a {BOMB_MB} MB line"
    assert [r.value["id"] for r in records if r.reason is None] == ["first", "last"]
    bad = [r for r in records if r.reason is not None]
    assert [r.reason for r in bad] == ["too_long"]
    assert bad[0].record_index == 1 and str(BOMB_MB * (1 << 20) + len('{"text": "') + 2) in bad[0].detail
    assert len(bad[0].raw) <= 2048  # a bounded prefix, never the giant text


def test_split_lines_bounds_every_line_and_counts_its_bytes():
    chunks = [b"ab\ncdefgh", b"ijk\n\nlmn", b"op\nq"]
    lines = list(split_lines(chunks, limit=5))
    assert [(l.data, l.n_bytes, l.ended) for l in lines] == [
        (b"ab", 2, True), (b"cdefghijk", 9, True), (b"", 0, True), (b"lmnop", 5, True), (b"q", 1, False)
    ]


def test_max_line_bytes_leaves_room_for_escapes():
    assert max_line_bytes(1000) >= 6 * 1000  # "\\u0001" is 6 bytes of line for 1 byte of text


def _ids(path: Path, **kwargs) -> list:
    batches = ingest_file(source="s", path=str(path), file_index=0, tokenizer=load_tokenizer(), **kwargs)
    return pa.Table.from_batches(list(batches)).to_pylist()


def test_a_directory_named_like_an_input_file_is_quarantined(tmp_path):
    (tmp_path / "x.jsonl").mkdir()
    rows = _ids(tmp_path / "x.jsonl")
    assert [(r["reason"], "directory" in r["detail"]) for r in rows] == [("unreadable_file", True)]


def test_unexpected_reader_error_costs_one_row_not_the_job(tmp_path, monkeypatch):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "one"}\n{"text": "two"}\n')
    import mixweave.data.ingest as ingest

    def broken(value, **kwargs):
        if value["text"] == "two":
            raise KeyError("a bug")
        return real(value, **kwargs)

    real = ingest.validate_record
    monkeypatch.setattr(ingest, "validate_record", broken)
    rows = _ids(path)
    assert [(r["kind"], r["record_index"], r["reason"]) for r in rows] == [("doc", 0, None), ("quarantine", 1, "reader_error")]


# ------------------------------------------------------------------------------------ globs
def _tree(root: Path, files: list[str]) -> None:
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps({"text": f"text of {rel}"}) + "\n")


@pytest.mark.timeout(60)
def test_symlink_loop_under_double_star_reads_each_file_once(tmp_path):
    _tree(tmp_path / "d", ["a.jsonl", "sub/b.jsonl"])
    (tmp_path / "d" / "sub" / "up").symlink_to(tmp_path / "d")  # d/sub/up -> d: a loop
    hits = expand_glob(str(tmp_path / "d" / "**" / "*.jsonl"))
    assert sorted(os.path.relpath(h.path, tmp_path / "d") for h in hits) == ["a.jsonl", "sub/b.jsonl"]


@pytest.mark.timeout(60)
def test_symlink_loop_of_three_terminates(tmp_path):
    _tree(tmp_path, ["x/1.jsonl", "y/2.jsonl", "z/3.jsonl"])
    for a, b in (("x", "y"), ("y", "z"), ("z", "x")):
        (tmp_path / a / "next").symlink_to(tmp_path / b)
        (tmp_path / a / "also").symlink_to(tmp_path / b)
    hits = expand_glob(str(tmp_path / "**" / "*.jsonl"))
    assert sorted(os.path.relpath(h.path, tmp_path) for h in hits) == ["x/1.jsonl", "y/2.jsonl", "z/3.jsonl"]


def test_file_symlinks_are_read_once_and_dangling_ones_are_quarantined(tmp_path):
    _tree(tmp_path, ["a.jsonl"])
    (tmp_path / "alias.jsonl").symlink_to(tmp_path / "a.jsonl")
    (tmp_path / "dead.jsonl").symlink_to(tmp_path / "missing.jsonl")
    rows = expand_sources({"s": SourceSpec("s", (str(tmp_path / "*.jsonl"),))})
    assert [os.path.basename(r["path"]) for r in rows] == ["a.jsonl", "dead.jsonl"]
    quarantine = _ids(Path(rows[1]["path"]))
    assert [r["reason"] for r in quarantine] == ["unreadable_file"]
    assert "No such file" in quarantine[0]["detail"]


def test_default_ids_are_unique_across_folders_and_independent_of_location(tmp_path):
    for base in ("one", "two"):
        _tree(tmp_path / base, ["a/part.jsonl", "b/part.jsonl"])
    keys = {}
    for base in ("one", "two"):
        rows = expand_sources({"s": SourceSpec("s", (str(tmp_path / base / "*" / "part.jsonl"),))})
        keys[base] = [r["id_key"] for r in rows]
        ids = [d["doc_id"] for r in rows for d in _ids(Path(r["path"]), id_key=r["id_key"])]
        assert ids == ["s/a/part.jsonl:0", "s/b/part.jsonl:0"]
    assert keys["one"] == keys["two"] == ["a/part.jsonl", "b/part.jsonl"]


def test_glob_root_is_the_common_folder_of_the_patterns(tmp_path):
    assert split_glob(str(tmp_path / "in" / "**"))[1] == ["**", "*"]
    assert glob_root([str(tmp_path / "in/a/*.jsonl"), str(tmp_path / "in/b/x.jsonl")]) == str(tmp_path / "in")


def test_out_folder_and_stage_folders_are_excluded_but_named_roots_are_read(tmp_path):
    _tree(tmp_path / "in", ["a.jsonl", "out/ingest/docs/x.jsonl", "old/ingest/y.jsonl", "out/stray.jsonl"])
    (tmp_path / "in/old/ingest/_manifest.json").write_text(json.dumps({"stage": "ingest", "fingerprint": "f"}))
    pattern = str(tmp_path / "in" / "**" / "*.jsonl")
    hits = expand_glob(pattern, exclude=[str(tmp_path / "in" / "out")])
    assert [os.path.relpath(h.path, tmp_path / "in") for h in hits if not h.excluded] == ["a.jsonl"]
    assert len([h for h in hits if h.excluded]) == 3
    # a stage folder or an excluded folder named before the first wildcard is read: the user asked for it
    assert len(expand_glob(str(tmp_path / "in/old/ingest/*.jsonl"))) == 1
    assert [h.excluded for h in expand_glob(str(tmp_path / "in/*.jsonl"), exclude=[str(tmp_path)])] == [False]


def test_a_source_whose_only_files_are_output_says_so(tmp_path):
    _tree(tmp_path / "in", ["out/x.jsonl"])
    spec = SourceSpec("s", (str(tmp_path / "in" / "**" / "*.jsonl"),))
    with pytest.raises(InputError, match="1 under the run's output"):
        expand_sources({"s": spec}, exclude=(str(tmp_path / "in" / "out"),))


def test_non_utf8_file_name_is_one_quarantine_row(tmp_path):
    name = os.fsdecode(b"bad\xff.jsonl")
    try:
        (tmp_path / name).write_text('{"text": "x"}\n')
    except (OSError, UnicodeEncodeError):  # pragma: no cover - a filesystem that refuses such names
        pytest.skip("this filesystem refuses non-UTF-8 file names")
    rows = expand_sources({"s": SourceSpec("s", (str(tmp_path / "*.jsonl"),))})
    assert len(rows) == 1 and rows[0]["file_error"]
    rows[0]["path"].encode("utf-8")  # storable in Arrow
    out = _ids(Path(rows[0]["path"]), file_error=rows[0]["file_error"])
    assert [r["reason"] for r in out] == ["unreadable_file"]


def test_parquet_row_with_invalid_utf8_costs_that_row_only(tmp_path):
    import pyarrow.parquet as pq

    text = pa.array([b"good text", b"bad \xff\xfe", b"more good"], type=pa.binary()).view(pa.string())
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": text}), tmp_path / "x.parquet")
    records = list(read_file(str(tmp_path / "x.parquet")))
    assert [(r.record_index, r.reason) for r in records] == [(0, None), (1, "invalid_utf8"), (2, None)]


def test_non_finite_floats_in_parquet_meta_become_null(tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a doc"], "score": pa.array([float("nan")])}), tmp_path / "x.parquet")
    rows = _ids(tmp_path / "x.parquet")
    assert [(r["kind"], json.loads(r["meta"])) for r in rows] == [("doc", {"score": None})]


def test_unlistable_folder_is_reported_not_skipped(tmp_path, monkeypatch):
    _tree(tmp_path, ["ok/a.jsonl", "locked/b.jsonl"])
    real_scandir = os.scandir

    def scandir(path):  # what a folder without read permission does (root would ignore a chmod)
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    hits = expand_glob(str(tmp_path / "*" / "*.jsonl"))
    assert [(os.path.basename(h.path), h.error) for h in hits] == [
        ("locked", "cannot list folder: PermissionError: Permission denied"), ("a.jsonl", None)]
    rows = expand_sources({"s": SourceSpec("s", (str(tmp_path / "*" / "*.jsonl"),))})
    assert [(os.path.basename(r["path"]), r["file_error"] is not None) for r in rows] == [("locked", True), ("a.jsonl", False)]


def test_a_file_in_the_middle_of_a_pattern_matches_nothing(tmp_path):
    _tree(tmp_path, ["a.jsonl"])
    assert expand_glob(str(tmp_path / "a.jsonl" / "*.jsonl")) == []


def test_a_stream_cut_inside_its_first_block_is_truncated_not_unreadable(tmp_path):
    blob = bz2.compress(b'{"text": "one block only"}\n' * 10)
    (tmp_path / "cut.jsonl.bz2").write_bytes(blob[: len(blob) // 2])
    assert [r.reason for r in read_file(str(tmp_path / "cut.jsonl.bz2"))] == ["truncated_file"]
