"""The ingest and count stages as real Spark jobs on local[2], and the in-process ingest (inputs below
``ingest.distributed_min_mb``) against them byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mixweave.pipeline.config import parse_config
from mixweave.data.manifest import read_manifest, verify_stage
from mixweave.data.schema import DOCS_SCHEMA
from mixweave.data.tokenizer import load_tokenizer
from mixweave.data.ingest import spark_hash_buckets
from mixweave.pipeline.runner import run_stages
from mixweave.data.artifacts import load_stats
from mixweave.pipeline.stages import build_stages

from test_bad_input import CASE_NAMES, _cases

pytestmark = pytest.mark.spark

ON_SPARK = {"distributed_min_mb": 0}
"""``ingest`` settings that make the stage a Spark job whatever the input's size."""


def corpus_sources(corpus_dir: Path) -> dict:
    return {d.name: {"paths": [str(d / "*.jsonl")]} for d in sorted(corpus_dir.iterdir()) if d.is_dir()}


def run(tmp_path: Path, sources: dict, **extra) -> Path:
    out = tmp_path / "run"
    config = parse_config({"out": str(out), "sources": sources, **extra})
    run_stages(build_stages(), config, wanted=["count"])
    return out


def test_fixture_corpus_ingest_and_count(spark, tmp_path, corpus_dir):
    sources = corpus_sources(corpus_dir)
    assert len(sources) >= 8
    out = run(tmp_path, sources, ingest=ON_SPARK)
    manifest = verify_stage(out / "ingest")
    assert manifest["path"] == "spark" and manifest["spark_master"] == spark.sparkContext.master
    counts = manifest["counts"]
    assert counts["n_input"] == counts["n_docs"] + counts["n_quarantined"]
    assert counts["input_equals_kept_plus_quarantined"] is True
    stats = load_stats(out / "count")
    assert set(stats["sources"]) == set(sources)
    tokenizer = load_tokenizer()
    for name, source in stats["sources"].items():
        assert source["n_docs"] > 0 and source["n_tokens"] > source["n_docs"]
        assert sum(source["length_histogram"]["counts"]) == source["n_docs"]
        table = pq.read_table(out / "ingest" / "docs" / name / "part-00000.parquet")
        assert table.schema.equals(DOCS_SCHEMA, check_metadata=False)
        assert table.column("doc_id").to_pylist() == sorted(table.column("doc_id").to_pylist())
        sample = table.slice(0, 5).to_pylist()
        assert [r["n_tokens"] for r in sample] == tokenizer.count_batch([r["text"] for r in sample])
    assert stats["tokenizer"]["sha256"] == tokenizer.info["sha256"]
    # a second run with the same config does nothing, nor one that would ingest in process (same bytes)
    for ingest in (ON_SPARK, {}):
        config = parse_config({"out": str(out), "sources": sources, "ingest": ingest})
        assert [r.status for r in run_stages(build_stages(), config, wanted=["count"])] == ["skipped", "skipped"]


def test_output_bytes_do_not_depend_on_partitioning_or_path(spark, tmp_path, corpus_dir):
    """1 task, 5 tasks and no Spark at all: the same files (several a source: the xxhash64 buckets)."""
    sources = corpus_sources(corpus_dir)
    ingest = {"target_file_mb": 0.05}  # several output files per source
    a = run(tmp_path / "a", sources, spark={"partitions": 1}, ingest={**ingest, **ON_SPARK})
    b = run(tmp_path / "b", sources, spark={"partitions": 5}, ingest={**ingest, **ON_SPARK})
    local = run(tmp_path / "local", sources, ingest=ingest)
    files_a = read_manifest(a / "ingest")["files"]
    assert len([f for f in files_a if "/docs/" in "/" + f["path"]]) > len(sources)
    assert read_manifest(local / "ingest")["path"] == "in_process" and read_manifest(local / "ingest")["spark_master"] is None
    for other in (b, local):
        assert read_manifest(other / "ingest")["files"] == files_a
        assert read_manifest(other / "ingest")["sources"] == read_manifest(a / "ingest")["sources"]
        assert (other / "count" / "stats.json").read_bytes() == (a / "count" / "stats.json").read_bytes()


def test_hash_buckets_are_sparks_xxhash64(spark):
    from pyspark.sql import functions as F

    ids = ["a", "doc-1", "ü-é", "数据", "😀 emoji", "x" * 300, "books/part-0001.jsonl:17", "-", "0"]
    for n in (2, 3, 7, 64):
        rows = spark.createDataFrame([(i,) for i in ids], "id string").select(
            F.pmod(F.xxhash64("id"), F.lit(n)).cast("int").alias("b")).collect()
        assert spark_hash_buckets(ids, n) == [r["b"] for r in rows]
    assert spark_hash_buckets(ids, 1) == [0] * len(ids)


def test_bad_files_are_quarantined_with_reasons_and_counted(spark, tmp_path):
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    expected: dict[str, int] = {}
    for name in CASE_NAMES:
        file_name, content, reasons, _ = _cases(tmp_path)[name]
        (bad_dir / f"{name}-{file_name}").write_bytes(content)
        for reason in reasons:
            expected[reason] = expected.get(reason, 0) + 1
    # the same id in two files of one source: the first (by path, then line) is kept
    (bad_dir / "zz-dup1.jsonl").write_text(json.dumps({"id": "same", "text": "first copy"}) + "\n")
    (bad_dir / "zz-dup2.jsonl").write_text(json.dumps({"id": "same", "text": "second copy"}) + "\n")
    expected["duplicate_id"] = expected.get("duplicate_id", 0) + 1
    out = run(tmp_path, {"bad": {"paths": [str(bad_dir / "*")]}}, ingest={"max_doc_bytes": 1000, **ON_SPARK})
    manifest = verify_stage(out / "ingest")
    # the in-process ingest quarantines the same records for the same reasons, byte for byte
    local = run(tmp_path / "local", {"bad": {"paths": [str(bad_dir / "*")]}}, ingest={"max_doc_bytes": 1000})
    assert read_manifest(local / "ingest")["path"] == "in_process"
    assert read_manifest(local / "ingest")["files"] == manifest["files"]
    source = manifest["sources"]["bad"]
    # every good line in the case files carries id "good": all but the first are duplicates
    n_good = sum(1 for name in CASE_NAMES if _cases(tmp_path)[name][1].startswith(b'{"id": "good"'))
    expected["duplicate_id"] += n_good - 1
    assert source["quarantine_reasons"] == dict(sorted(expected.items()))
    assert source["n_input"] == source["n_docs"] + source["n_quarantined"]
    quarantine = pq.read_table(out / "ingest" / "quarantine" / "bad" / "part-00000.parquet").to_pylist()
    assert len(quarantine) == source["n_quarantined"]
    assert all(row["reason"] and row["detail"] for row in quarantine)
    docs = pq.read_table(out / "ingest" / "docs" / "bad" / "part-00000.parquet").to_pylist()
    assert [d["text"] for d in docs if d["doc_id"] == "same"] == ["first copy"]


def test_a_small_compressed_input_that_expands_is_ingested_by_spark(spark, tmp_path):
    """A 'small' input on disk (a gzip file far below ingest.distributed_min_mb) that decodes past
    DECODED_LIMIT_FACTOR times it: the in-process ingest stops and the Spark job starts over in the
    same stage folder, writing what the in-process ingest would have written without the limit."""
    import gzip

    from mixweave.jobs.ingest import SourceSpec, run_ingest_in_process
    from mixweave.pipeline.stages.ingest import DECODED_LIMIT_FACTOR

    folder = tmp_path / "in"
    folder.mkdir()
    lines = [json.dumps({"id": f"d{i}", "text": "the river runs to the sea " * 40}) for i in range(3000)]
    (folder / "part.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=9))
    threshold_mb = 0.1
    on_disk = (folder / "part.jsonl.gz").stat().st_size
    assert on_disk < threshold_mb * 2**20 < 3_000 * 1_000 / DECODED_LIMIT_FACTOR  # small on disk, large decoded
    out = run(tmp_path, {"s": {"paths": [str(folder / "*.jsonl.gz")]}}, ingest={"distributed_min_mb": threshold_mb})
    manifest = verify_stage(out / "ingest")
    assert manifest["path"] == "spark" and manifest["counts"]["n_docs"] == 3000
    unbounded = run_ingest_in_process(sources={"s": SourceSpec("s", (str(folder / "*.jsonl.gz"),))},
                                      out_root=tmp_path / "unbounded")
    assert unbounded["sources"]["s"]["n_docs"] == 3000
    for rel in ("docs/s/part-00000.parquet",):
        assert (out / "ingest" / rel).read_bytes() == (tmp_path / "unbounded" / rel).read_bytes()
    assert [f["path"] for f in manifest["files"]] == ["docs/s/part-00000.parquet"]
