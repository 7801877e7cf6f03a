"""The Spark kNN join equals the in-process join shard for shard, whatever the tasks; the knn stage's
distributed path on the fixture corpus (the exact join on the cluster scenario's run, the IVF join on
the small runs' reference)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mixweave.retrieval import knn
from mixweave.retrieval.ivf_join import exact_join_knn, ivf_join_knn
from mixweave.retrieval.knn import sampled_recall_at_k

from test_retrieval_partition import clustered

pytestmark = pytest.mark.spark


def write_blocks(X: np.ndarray, folder, sizes) -> list:
    """X cut into .npy blocks of uneven sizes (as embed writes them)."""
    folder.mkdir()
    files, lo = [], 0
    for i, size in enumerate(sizes):
        np.save(folder / f"part-{i:05d}.npy", X[lo:lo + size])
        files.append(folder / f"part-{i:05d}.npy")
        lo += size
    assert lo == len(X)
    return files


def read_shards(root, info) -> tuple[np.ndarray, np.ndarray]:
    assert [s["start"] for s in info["shards"]] == list(range(0, info["shards"][-1]["stop"], 100))
    return (np.concatenate([np.load(root / s["I"]) for s in info["shards"]]),
            np.concatenate([np.load(root / s["D"]) for s in info["shards"]]))


def test_spark_join_equals_in_process_on_any_number_of_tasks(spark, tmp_path):
    from mixweave.data.artifacts import Blocks
    from mixweave.jobs.knn import run_knn_join

    X = clustered(450, 24, 15, seed=6, cos=0.5)
    blocks = Blocks.from_files(write_blocks(X, tmp_path / "embed", [130, 7, 200, 113]))
    I_ref, D_ref = ivf_join_knn(X, 5, nlist=12, nprobe=2, seed=9)
    files = {}
    for tasks in (1, 3):
        out = tmp_path / f"ivf{tasks}" / "src"
        info = run_knn_join(spark, blocks, out, k=5, shard_rows=100, nlist=12, nprobe=2, seed=9, n_tasks=tasks,
                            query_block=40, recall_sample=1000 if tasks == 3 else 0)
        I, D = read_shards(out.parent, info)
        assert I.dtype == np.int64 and D.dtype == np.float32
        assert np.array_equal(I, I_ref) and np.array_equal(D, D_ref), tasks
        assert (info["nlist"], info["nprobe"]) == (12, 2)
        files[tasks] = sorted(p.name for p in out.iterdir())
    assert info["recall_at_k"] == pytest.approx(sampled_recall_at_k(X, I_ref, seed=9), abs=1e-12)
    assert info["recall_at_k"] < 1.0
    assert files[1] == files[3] == [f"{key}-{i:05d}.npy" for key in "DI" for i in range(5)]  # no temp files left

    out = tmp_path / "exact" / "src"
    info = run_knn_join(spark, blocks, out, k=5, shard_rows=100, mode="exact", list_rows=128, seed=9, n_tasks=2)
    I, D = read_shards(out.parent, info)
    I_exact, D_exact = exact_join_knn(X, 5, list_rows=128)
    assert np.array_equal(I, I_exact) and np.array_equal(D, D_exact)
    I_flat, D_flat = knn(X, 5, method="flat")
    assert np.array_equal(I, I_flat) and np.abs(D - D_flat).max() <= 1e-6
    assert info["recall_at_k"] == 1.0 and info["nlist"] == info["nprobe"] == 4


@pytest.mark.timeout(900)  # waits for the cluster scenario when run alone
def test_knn_stage_distributed_path_on_the_fixture(small_runs, distributed_run):
    """The small runs' reference (in process) against the shared ``distributed_run`` (tests/conftest.py:
    the same inputs with ``distributed_min_docs: 0``, spark-submitted onto a one-core standalone
    cluster): knn ran on Spark (its embeddings equal the reference's: tests/test_e2e.py), dedup read its
    shards."""
    from mixweave.data.artifacts import load_keep, load_knn

    out = distributed_run.out
    reports = distributed_run.reports
    assert {s: reports[s] for s in ("ingest", "embed", "knn", "dedup")} == \
        {"ingest": "ran", "embed": "ran", "knn": "ran", "dedup": "ran"}
    manifest = json.loads((out / "knn" / "_manifest.json").read_text())
    local = json.loads((small_runs.reference / "knn" / "_manifest.json").read_text())
    for stage in ("knn", "dedup", "order", "pack"):  # the three sources' Spark jobs were in flight together
        assert json.loads((out / stage / "_manifest.json").read_text())["timings"]["spark_sources_at_once"] >= 2, stage
    assert local["timings"]["spark_sources_at_once"] == 0  # in process: no Spark source
    for source, entry in manifest["knn"].items():
        assert (entry["path"], entry["method"]) == ("spark", "exact_join")
        assert local["knn"][source]["path"] == "local"
        assert [(s["start"], s["stop"], s["I"]) for s in entry["shards"]] == \
            [(s["start"], s["stop"], s["I"]) for s in local["knn"][source]["shards"]]  # 30 docs: shards of 16
        I, D = load_knn(out / "knn", source)
        I_local, D_local = load_knn(small_runs.reference / "knn", source)
        assert np.array_equal(I, I_local) and np.abs(D - D_local).max() <= 1e-6
        assert np.array_equal(load_keep(out / "dedup", source), load_keep(small_runs.reference / "dedup", source))


def test_knn_stage_ivf_join_on_the_reference(spark, small_runs, tmp_path):
    """The knn stage's IVF join as a Spark job (``distributed_min_docs: 0``) on the small runs'
    reference, its ingest and embed reused through ``overrides`` (skipped): the in-process IVF join's
    neighbours and sampled recall, source by source."""
    from mixweave.data.artifacts import load_embeddings, load_knn
    from mixweave.pipeline.runner import run_stages
    from mixweave.pipeline.stages import build_stages

    reference = small_runs.reference
    order = {**small_runs.config_data(reference, small_runs.globs)["order"], "distributed_min_docs": 0,
             "knn_method": "ivf", "ivf_nlist": 3, "ivf_nprobe": 2}
    config = small_runs.config(tmp_path / "run", small_runs.globs, order=order)
    reports = run_stages(build_stages(), config, wanted=["knn"],
                         overrides={"ingest": reference / "ingest", "embed": reference / "embed", "knn": tmp_path / "knn_ivf"})
    assert {r.name: r.status for r in reports} == {"ingest": "skipped", "embed": "skipped", "knn": "ran"}
    manifest = json.loads((tmp_path / "knn_ivf" / "_manifest.json").read_text())
    assert sorted(manifest["knn"]) == ["books", "code", "web"]
    for source, entry in manifest["knn"].items():
        assert (entry["path"], entry["method"], entry["nlist"], entry["nprobe"]) == ("spark", "ivf_join", 3, 2)
        X = load_embeddings(reference / "embed", source)
        I_ref, D_ref = ivf_join_knn(X, 4, nlist=3, nprobe=2, seed=5)
        I, D = load_knn(tmp_path / "knn_ivf", source)
        assert np.array_equal(I, I_ref) and np.array_equal(D, D_ref)
        assert entry["recall_at_k"] == round(sampled_recall_at_k(X, I_ref, seed=5), 4)


def test_bad_embed_block_is_one_input_error(spark, tmp_path):
    from mixweave.errors import InputError
    from mixweave.data.artifacts import Blocks
    from mixweave.jobs.knn import run_knn_join

    X = clustered(60, 8, 3, seed=1)
    X[45] *= 2.0  # not unit-norm: document 45, in the second block
    blocks = Blocks.from_files(write_blocks(X, tmp_path / "embed", [40, 20]))
    with pytest.raises(InputError, match=r"^embed block part-00001.npy: 1 rows are not finite unit vectors "
                                         r"\(document 45 has norm 2.0000\); re-run the embed stage$"):
        run_knn_join(spark, blocks, tmp_path / "knn" / "src", k=3, shard_rows=16, mode="exact", n_tasks=2)
