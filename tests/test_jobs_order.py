"""Spark partitioned ordering equals the in-process partitioned traversal, whatever the tasks:
the driver-array job (``run_partitioned_order``) and the sharded job (``run_sharded_order``, which
reads embed blocks, kNN and keep shards in tasks), checked against ``partitioned_order``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mixweave.retrieval import knn, order_metrics
from mixweave.retrieval.dedup import restrict_knn
from mixweave.retrieval.partition import partitioned_order

from test_retrieval_partition import clustered

pytestmark = pytest.mark.spark


def test_spark_partitioned_order_default_tasks_and_tiny_input(spark):
    from mixweave.jobs.order import run_partitioned_order

    X = clustered(30, 16, 3, seed=0)
    I, D = knn(X, 4, method="flat")
    I[0, :] = -1  # a document with no neighbours of its own
    D[0, :] = -np.inf
    order, info = run_partitioned_order(spark, X, I, D, n_clusters=3, seed=0)
    assert np.array_equal(order, partitioned_order(X, I, D, n_clusters=3, seed=0)[0])
    assert sorted(order.tolist()) == list(range(30))
    empty, info = run_partitioned_order(spark, np.zeros((0, 16), np.float32), np.zeros((0, 4), np.int64),
                                        np.zeros((0, 4), np.float32), n_clusters=3, seed=0)
    assert empty.size == 0 and info["n_docs"] == 0


# ---------------------------------------------------------------------------- the sharded job
def _manifest(folder, stage: str, **fields) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "_manifest.json").write_text(json.dumps({"stage": stage, "files": [], **fields}))


def write_shards(root, X, I, D, keep, *, shard_rows: int, embed_rows: list[int]):
    """Stage folders as embed, knn and dedup write them: embed blocks of uneven sizes, kNN and
    keep shards of ``shard_rows`` (global document index)."""
    from mixweave.data.artifacts import shard_bounds

    embed, knn_dir, dedup = root / "embed", root / "knn", root / "dedup"
    (embed / "s").mkdir(parents=True)
    (knn_dir / "s").mkdir(parents=True)
    (dedup / "s").mkdir(parents=True)
    files, at = [], 0
    for i, rows in enumerate(embed_rows):
        np.save(embed / "s" / f"part-{i:05d}.npy", X[at:at + rows])
        files.append(f"s/part-{i:05d}.npy")
        at += rows
    assert at == X.shape[0]
    knn_shards, keep_shards = [], []
    for i, (lo, hi) in enumerate(shard_bounds(X.shape[0], shard_rows)):
        np.save(knn_dir / "s" / f"I-{i:05d}.npy", I[lo:hi])
        np.save(knn_dir / "s" / f"D-{i:05d}.npy", D[lo:hi])
        np.save(dedup / "s" / f"keep-{i:05d}.npy", keep[lo:hi])
        knn_shards.append({"start": lo, "stop": hi, "I": f"s/I-{i:05d}.npy", "D": f"s/D-{i:05d}.npy"})
        keep_shards.append({"start": lo, "stop": hi, "keep": f"s/keep-{i:05d}.npy"})
    _manifest(embed, "embed", embeddings={"s": {"files": files, "dim": X.shape[1]}})
    _manifest(knn_dir, "knn", knn={"s": {"shards": knn_shards}})
    _manifest(dedup, "dedup", dedup={"s": {"shards": keep_shards, "kept": int(keep.sum())}})
    return embed, knn_dir, dedup


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    rng = np.random.default_rng(2)
    X = clustered(600, 32, 24, seed=7)
    X[rng.integers(0, 600, 40)] = X[rng.integers(0, 600, 40)]  # exact duplicates: ties in kNN and votes
    I, D = knn(X, 6, method="flat")
    D = np.round(D, 2).astype(np.float32)  # more equal weights: the tie rules are exercised
    keep = rng.random(600) > 0.15
    root = tmp_path_factory.mktemp("sharded")
    dirs = write_shards(root, X, I, D, keep, shard_rows=64, embed_rows=[100, 37, 300, 163])
    return X, I, D, keep, dirs


def _read_files(folder, files):
    return [np.load(folder / name) for name in files]


def test_sharded_order_equals_partitioned_order_on_kept_docs(spark, sharded, tmp_path):
    from mixweave.jobs.order import run_sharded_order

    X, I, D, keep, (embed, knn_dir, dedup) = sharded
    kept_index = np.flatnonzero(keep)
    I_k, D_k = restrict_knn(I, D, keep)
    path, info_local = partitioned_order(X[kept_index], I_k, D_k, n_clusters=7, seed=3, k_centroids=3)
    expected = kept_index[path]

    outputs = []
    old = spark.conf.get("spark.sql.shuffle.partitions")
    try:
        for tasks, shuffle in ((1, "1"), (3, "5")):
            spark.conf.set("spark.sql.shuffle.partitions", shuffle)
            out = tmp_path / f"out-{tasks}"
            info = run_sharded_order(spark, embed_dir=embed, knn_dir=knn_dir, dedup_dir=dedup, source="s", out_dir=out,
                                     n_clusters=7, seed=3, k_centroids=3, n_tasks=tasks, work_dir=tmp_path)
            parts = _read_files(out, info["files"])
            assert all(p.dtype == np.int64 for p in parts)
            assert np.array_equal(np.concatenate(parts), expected), tasks
            assert sorted(p.name for p in out.iterdir()) == sorted(info["files"])  # nothing else left behind
            assert info["n_clusters"] == info_local["n_clusters"] == len(info["files"])
            assert info["edge_retention"] == pytest.approx(info_local["edge_retention"], abs=1e-6)
            outputs.append([p.tobytes() for p in parts])
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", old)
    assert outputs[0] == outputs[1]  # the same files, byte for byte, on 1 and 3 tasks
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("mixweave-order-")] == []

    # metrics: exact ones equal the in-process order_metrics, estimates close
    got = info["metrics"]
    ref = order_metrics(X[kept_index], path, I_k, D_k, seed=3)
    assert got["metrics_sampled"] is True and got["n_docs"] == ref["n_docs"] == kept_index.size
    for key in ("mean_adjacent_cosine", "path_objective", "nn_ceiling", "jump_rate", "random_pair_cosine_p90",
                "share_docs_in_short_segments", "ratio_to_ceiling"):
        assert got[key] == pytest.approx(ref[key], abs=1e-5), key
    for key in ("n_segments", "segment_length_median", "segment_length_max"):
        assert got[key] == ref[key], key
    for key in ("p10_adjacent_cosine", "p50_adjacent_cosine"):
        assert abs(got[key] - ref[key]) <= 0.01, key
    assert abs(got["random_order_mean_adjacent_cosine"] - ref["random_order_mean_adjacent_cosine"]) < 0.02
    assert abs(got["random_order_jump_rate"] - ref["random_order_jump_rate"]) < 0.02


def test_sharded_order_bad_input_is_one_line(spark, sharded, tmp_path):
    from mixweave.errors import InputError
    from mixweave.jobs.order import run_sharded_order

    from mixweave.retrieval.partition import kmeans_sample

    X, I, D, keep, _ = sharded
    kept = np.flatnonzero(keep)
    outside = np.setdiff1d(np.arange(kept.size), kmeans_sample(kept.size, 2, seed=0))[-1]
    bad = X.copy()
    bad[kept[outside]] *= 3  # a kept row that is not unit-norm, outside the k-means sample: a task finds it
    dirs = write_shards(tmp_path / "bad", bad, I, D, keep, shard_rows=64, embed_rows=[600])
    with pytest.raises(InputError, match="unit-norm"):
        run_sharded_order(spark, embed_dir=dirs[0], knn_dir=dirs[1], dedup_dir=dirs[2], source="s",
                          out_dir=tmp_path / "out", n_clusters=2, seed=0, n_tasks=2, work_dir=tmp_path)


# ------------------------------------------------------------------------- the stage, end to end
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_distributed_order_stage_feeds_pack_and_export(distributed_run, tmp_path):
    """The shared ``distributed_run`` (tests/conftest.py: the small corpus spark-submitted onto a one-core
    standalone cluster, ingest -> ... -> export with ``distributed_min_docs: 0, partitions: 3``): order
    ran as the sharded Spark job, wrote one file per cluster (the same bytes as the in-process
    partitioned path on the same kNN and keep shards), and pack, export and the report read it."""
    from mixweave.data.artifacts import load_order
    from mixweave.data.manifest import read_manifest
    from mixweave.pipeline.report import adjacent_cosines
    from mixweave.pipeline.stages.order import _local_order, plan_clusters

    out, reports = distributed_run.out, distributed_run.reports
    assert distributed_run.order["partitions"] == 3 and distributed_run.order["distributed_min_docs"] == 0
    assert all(reports[s] == "ran" for s in ("ingest", "count", "embed", "knn", "dedup", "order", "pack", "export")), reports

    manifest = read_manifest(out / "order")["order"]
    dedup = read_manifest(out / "dedup")["dedup"]
    for source, entry in manifest.items():
        assert entry["path"] == "spark" and entry["metrics_sampled"] is True and not entry["clusters_auto"]
        kept = dedup[source]["kept"]
        n_clusters, distributed, _ = plan_clusters(dedup[source]["n_docs"], kept, 3, 0)
        assert distributed and n_clusters == 3 and 1 <= entry["n_clusters"] == len(entry["files"]) <= 3  # votes may empty a cluster
        (tmp_path / source).mkdir()
        files, _, extra = _local_order(out / "embed", out / "knn", out / "dedup", source, n_clusters, 5, tmp_path / source)
        assert extra == {"path": "local", "n_clusters": entry["n_clusters"], "edge_retention": entry["edge_retention"]}
        assert [f"{source}/{f}" for f in files] == entry["files"]
        for name in files:
            assert (tmp_path / source / name).read_bytes() == (out / "order" / source / name).read_bytes()
        assert sorted(load_order(out / "order", source).tolist()) == sorted(
            np.flatnonzero(np.concatenate([np.load(out / "dedup" / s["keep"]) for s in dedup[source]["shards"]])).tolist())
        assert adjacent_cosines(out, source) is not None
    pack = read_manifest(out / "pack")
    assert pack is not None and read_manifest(out / "export")["exports"]["megatron"]["windows"] > 0
