"""Spark embed job on local[2] equals in-process embedding of the same texts, for the torch
reference and the CPU default backend; the bytes do not depend on how units meet tasks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixweave.data.schema import DOCS_SCHEMA

pytestmark = pytest.mark.spark

ROW_GROUP = 7  # several units per file, several tasks
MAX_TOKENS = 32  # the claims do not depend on it (the clamp of the default 510: tests/test_retrieval_encoders.py)


def real_texts(corpus_dir: Path, source: str, n: int) -> list[dict]:
    rows = []
    for path in sorted((corpus_dir / source).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            if rec.get("text", "").strip():
                rows.append({"doc_id": str(rec["id"]), "text": rec["text"]})
    if len(rows) < n:
        pytest.skip(f"tests/data/corpus/{source} has only {len(rows)} documents")
    return rows[:n]


def write_docs(path: Path, source: str, rows: list[dict]) -> None:
    table = pa.Table.from_pylist([
        {"doc_id": r["doc_id"], "source": source, "text": r["text"], "n_bytes": len(r["text"].encode()),
         "n_tokens": 0, "meta": "{}"} for r in rows], schema=DOCS_SCHEMA)
    pq.write_table(table, path, row_group_size=ROW_GROUP)


@pytest.fixture(scope="module")
def docs(tmp_path_factory, corpus_dir):
    root = tmp_path_factory.mktemp("ingest")
    files = {}
    for source, n in (("code", 20), ("encyclopedic", 16)):
        rows = real_texts(corpus_dir, source, n)
        (root / source).mkdir()
        half = n // 2
        paths = [root / source / "part-00000.parquet", root / source / "part-00001.parquet"]
        write_docs(paths[0], source, rows[:half])
        write_docs(paths[1], source, rows[half:])
        files[source] = paths
    return root, files


@pytest.fixture(scope="module")
def spark_embedded(spark, docs, tmp_path_factory):
    """``backend -> (out folder, units, info)``: the Spark embed job over every unit, run once per
    backend and shared by the tests below (the partitioning test reuses the ``auto`` run)."""
    from mixweave.jobs.embed import plan_units, run_embed

    root, files = docs
    done: dict[str, tuple] = {}

    def get(backend: str):
        if backend not in done:
            units = plan_units(files, root)
            out = tmp_path_factory.mktemp(f"embed-{backend}")
            info = run_embed(spark, units=units, out_root=out, encoder="default", max_tokens=MAX_TOKENS, batch_size=4,
                             torch_threads=1, device="cpu", backend=backend)
            done[backend] = (out, units, info)
        return done[backend]

    return get


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_spark_embed_equals_in_process(docs, spark_embedded, backend):
    import torch

    from mixweave.retrieval.encoder_backends import cpu_default
    from mixweave.retrieval.encoders import embed_texts, load_encoder

    CPU_DEFAULT = cpu_default()
    root, files = docs
    out, units, info = spark_embedded(backend)
    assert len(units) == 8  # 4 files of 10 or 8 rows, row groups of 7: 2 units each
    assert info["rows"] == 36 and info["backend"] == ("torch" if backend == "torch" else CPU_DEFAULT)

    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the job pins 1 thread per task: same kernels, same bits
    try:
        model = load_encoder("default", "cpu", backend=info["backend"], threads=1)
        for source, paths in files.items():
            texts = [t for p in paths for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()]
            mine = sorted(u["out_file"] for u in units if u["source"] == source)
            blocks = [np.load(out / f) for f in mine]
            spark_emb = np.concatenate(blocks)  # name order == document order
            assert spark_emb.dtype == np.float32 and spark_emb.shape == (len(texts), 384)
            np.testing.assert_allclose(np.linalg.norm(spark_emb, axis=1), 1.0, atol=1e-5)
            # the whole source in one call: batches differ, so equal up to float rounding
            whole = embed_texts(model, texts, max_tokens=MAX_TOKENS, batch_size=4)
            np.testing.assert_allclose(spark_emb, whole, atol=1e-5, rtol=0)
            # unit by unit, same batches as the tasks: bitwise equal
            for unit in (u for u in units if u["source"] == source):
                table = pq.ParquetFile(unit["docs_file"]).read_row_group(unit["row_group"], columns=["text"])
                unit_texts = table.column("text").to_pylist()[unit["start"]:unit["stop"]]
                local = embed_texts(model, unit_texts, max_tokens=MAX_TOKENS, batch_size=4)
                assert np.array_equal(np.load(out / unit["out_file"]), local), unit["out_file"]
    finally:
        torch.set_num_threads(previous)


def test_spark_embed_is_independent_of_partitioning(spark, docs, spark_embedded, tmp_path):
    """The default backend (auto: the CPU default here) gives the same bytes whatever the task layout:
    the shared ``auto`` run (units in order over local[2]'s tasks) against the code units in reverse
    order, and every code unit in this process (``run_embed_in_process``: the embed stage's path for
    small runs)."""
    from mixweave.jobs.embed import plan_units, run_embed, run_embed_in_process
    from mixweave.retrieval.encoder_backends import resolve_backend

    root, files = docs
    units = [u for u in plan_units(files, root) if u["source"] == "code"]
    a_dir, _, info = spark_embedded("auto")
    assert info["backend"] == resolve_backend("auto", "cpu")  # the run_embed defaults below resolve the same
    run_embed(spark, units=units[::-1], out_root=tmp_path / "b", max_tokens=MAX_TOKENS, batch_size=4, torch_threads=1,
              device="cpu")
    local = run_embed_in_process(units=units, out_root=tmp_path / "c", max_tokens=MAX_TOKENS, batch_size=4,
                                 torch_threads=1, device="cpu")
    assert local["rows"] == sum(u["stop"] - u["start"] for u in units) and local["backend"] == info["backend"]
    for u in units:
        a = np.load(a_dir / u["out_file"])
        assert np.array_equal(a, np.load(tmp_path / "b" / u["out_file"]))
        assert np.array_equal(a, np.load(tmp_path / "c" / u["out_file"]))


def test_task_groups_deal_largest_units_first():
    """LPT: every unit in exactly one task, task 0 starts with the largest unit, sizes dealt round-robin;
    one unit per task up to MAX_TASKS."""
    from mixweave.jobs.embed import task_groups

    sizes = [512, 30, 512, 200, 7, 512, 64]
    units = [{"unit": i, "start": 0, "stop": n} for i, n in enumerate(sizes)]
    groups = task_groups(units)
    assert [len(g) for g in groups] == [1] * len(units)
    assert [g[0]["unit"] for g in groups] == [0, 2, 5, 3, 6, 1, 4]
    dealt = task_groups(units, max_tasks=3)
    assert sorted(u["unit"] for g in dealt for u in g) == list(range(len(units)))
    assert [[u["unit"] for u in g] for g in dealt] == [[0, 3, 4], [2, 6], [5, 1]]
