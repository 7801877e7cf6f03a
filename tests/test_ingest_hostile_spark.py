"""Hostile input through the real Spark ingest: ids across folders, odd files, own output."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixweave.pipeline.config import parse_config
from mixweave.data.manifest import read_manifest
from mixweave.jobs.ingest import SourceSpec, run_ingest
from mixweave.pipeline.runner import run_stages
from mixweave.pipeline.stages import build_stages

pytestmark = pytest.mark.spark


def test_same_file_names_in_two_folders_and_odd_files(spark, tmp_path):
    src = tmp_path / "src"
    for folder in ("a", "b"):
        (src / folder).mkdir(parents=True)
        lines = [json.dumps({"text": f"{folder} document {i} without an id"}) for i in range(5)]
        (src / folder / "part.jsonl").write_text("\n".join(lines) + "\n")
    (src / "a" / "loop").symlink_to(src)  # a symlink loop under '**'
    (src / "b" / "dead.jsonl").symlink_to(src / "missing.jsonl")  # dangling
    (src / "b" / "dir.jsonl").mkdir()  # a folder named like a file
    (src / "b" / "bad.jsonl").write_bytes(b'{"text": "lone \\ud800"}\n{"text": "fine"}\n')
    stats = run_ingest(spark, sources={"s": SourceSpec("s", (str(src / "**" / "*.jsonl"),))}, out_root=tmp_path / "out")
    source = stats["sources"]["s"]
    assert source["quarantine_reasons"] == {"invalid_unicode": 1, "unreadable_file": 2}
    assert source["n_docs"] == 11 and source["n_input"] == 14
    docs = pq.read_table(tmp_path / "out" / "docs" / "s" / "part-00000.parquet").column("doc_id").to_pylist()
    assert "s/a/part.jsonl:0" in docs and "s/b/part.jsonl:0" in docs and "s/b/bad.jsonl:1" in docs


def _parquet_inputs(folder: Path) -> None:
    folder.mkdir(parents=True)
    for part in range(2):
        rows = [{"id": f"p{part}-{i}", "text": f"parquet document {part} {i} about rivers"} for i in range(7)]
        pq.write_table(pa.Table.from_pylist(rows), folder / f"part-{part}.parquet")


def test_a_run_never_reads_its_own_output(spark, tmp_path):
    nest = tmp_path / "in" / "nest"
    _parquet_inputs(nest / "data")
    data = {"out": str(nest / "out"), "sources": {"p": {"paths": [str(nest / "**" / "*.parquet")]}}}
    config = parse_config(data)

    def n_docs() -> int:
        return read_manifest(nest / "out" / "ingest")["counts"]["n_docs"]

    assert [r.status for r in run_stages(build_stages(), config, wanted=["ingest"])] == ["ran"]
    assert n_docs() == 14
    # the output under the glob changes neither the fingerprint (skipped) nor, when forced, the count
    assert [r.status for r in run_stages(build_stages(), config, wanted=["ingest"])] == ["skipped"]
    for ingest in ({}, {"distributed_min_mb": 0}, {}):  # in process, as a Spark job, in process again
        config = parse_config({**data, "ingest": ingest})
        assert [r.status for r in run_stages(build_stages(), config, wanted=["ingest"], force=True)] == ["ran"]
        assert n_docs() == 14
        assert read_manifest(nest / "out" / "ingest")["path"] == ("spark" if ingest else "in_process")
