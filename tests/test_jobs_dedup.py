"""Spark semantic dedup: large-star/small-star components equal a BFS on adversarial graphs, and the
sharded job writes the same bytes as the in-process path (random kNN arrays with 1 and 3 tasks and
shuffle partitions; the fixture corpus's real kNN through the stage), with one-line input errors."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixweave.data.artifacts import shard_bounds

pytestmark = pytest.mark.spark


def bfs_roots(n: int, edges) -> np.ndarray:
    G = nx.Graph()
    G.add_nodes_from(range(n))
    G.add_edges_from(edges)
    label = np.arange(n)
    for comp in nx.connected_components(G):
        label[list(comp)] = min(comp)
    return label


def adversarial_edges(seed: int = 0) -> tuple[int, list[tuple[int, int]]]:
    """Disjoint pieces on one node range: a long chain with shuffled ids, a star whose centre is
    not its minimum, a path zig-zagging between high and low ids, small components, isolated
    nodes, duplicate and reversed edges, self loops."""
    rng = np.random.default_rng(seed)
    n = 400
    ids = rng.permutation(n)
    at = 0

    def take(m):
        nonlocal at
        at += m
        return [int(v) for v in ids[at - m:at]]

    chain = take(120)
    edges = list(zip(chain[:-1], chain[1:]))
    star = take(40)
    hub = max(star)
    edges += [(hub, v) for v in star if v != hub]
    zig = sorted(take(30))
    zz = [zig[i // 2] if i % 2 == 0 else zig[-1 - i // 2] for i in range(30)]  # low, high, low+1, high-1, ...
    edges += list(zip(zz[:-1], zz[1:]))
    for _ in range(20):  # pairs and triangles
        piece = take(int(rng.integers(2, 4)))
        edges += list(zip(piece[:-1], piece[1:])) + [(piece[-1], piece[0])]
    take(50)  # isolated: in no edge
    edges += [(b, a) for a, b in edges[::7]] + edges[::5] + [(v, v) for v in chain[:3]]
    return n, edges


@pytest.mark.parametrize("single_task_edges", [0, 10_000])
def test_star_components_equal_bfs_on_adversarial_graphs(spark, single_task_edges):
    """Rounds only (0), or one task at once (10,000 > every edge; rounds then one task: the
    random graphs below)."""
    from mixweave.jobs.dedup import star_components

    n, edges = adversarial_edges()
    E = spark.createDataFrame(pa.table({"a": [a for a, _ in edges], "b": [b for _, b in edges]}).to_pandas())
    stars, info = star_components(E, single_task_edges=single_task_edges)
    got = stars.toArrow()
    label = np.arange(n)
    label[got.column("b").to_numpy()] = got.column("a").to_numpy()
    assert np.array_equal(label, bfs_roots(n, edges))
    assert got.num_rows == int((label != np.arange(n)).sum())  # one edge per non-root node
    if single_task_edges == 0:
        assert info["rounds"] >= 3 and info["one_task_edges"] == 0  # the shuffled chain needs real rounds
    else:
        assert info["rounds"] == 0 and info["one_task_edges"] > 200
        empty, info = star_components(spark.createDataFrame([], "a long, b long"), single_task_edges=0)
        assert empty.count() == 0 and info == {"rounds": 0, "one_task_edges": 0}


def write_knn(root, I, D, shard_rows: int, ingest_rows: list[int]):
    """knn and ingest folders as the stages write them (manifests, shards, doc_id files)."""
    knn_dir, ingest = root / "knn", root / "ingest"
    (knn_dir / "s").mkdir(parents=True)
    (ingest / "docs").mkdir(parents=True)
    shards = []
    for i, (lo, hi) in enumerate(shard_bounds(I.shape[0], shard_rows)):
        np.save(knn_dir / "s" / f"I-{i:05d}.npy", I[lo:hi])
        np.save(knn_dir / "s" / f"D-{i:05d}.npy", D[lo:hi])
        shards.append({"start": lo, "stop": hi, "I": f"s/I-{i:05d}.npy", "D": f"s/D-{i:05d}.npy"})
    (knn_dir / "_manifest.json").write_text(json.dumps({"stage": "knn", "files": [],
                                                        "knn": {"s": {"n_docs": I.shape[0], "shards": shards}}}))
    files, at = [], 0
    for i, rows in enumerate(ingest_rows):
        path = ingest / "docs" / f"part-{i}.parquet"
        pq.write_table(pa.table({"doc_id": pa.array([f"doc-{j}" for j in range(at, at + rows)], pa.string())}), path)
        files.append(path)
        at += rows
    assert at == I.shape[0]
    return knn_dir, files


def dedup_files(folder, entry) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for s in entry["shards"] for name in (s["keep"], s["pairs"])}


def random_knn(n: int, k: int, seed: int):
    """Random kNN lists with many duplicate pairs: chains across shards, both directions listed,
    cosines exactly at the threshold, padding."""
    rng = np.random.default_rng(seed)
    I = rng.integers(-1, n, size=(n, k))
    I[1:, 0] = np.arange(n - 1)  # each document's first neighbour is the previous one: a chain over all shards
    D = rng.choice(np.array([0.3, 0.94, 0.95, 0.99], np.float32), size=(n, k), p=[0.8, 0.08, 0.06, 0.06])
    D[1:, 0] = np.where(rng.random(n - 1) < 0.7, np.float32(0.95), np.float32(0.5))
    return I, D


@pytest.mark.parametrize("tasks", [1, 3])
def test_spark_dedup_writes_the_in_process_bytes(spark, tmp_path, tasks):
    from mixweave.data.artifacts import knn_shards, load_knn
    from mixweave.jobs.dedup import run_distributed_dedup
    from mixweave.pipeline.stages.dedup import dedup_local
    from mixweave.retrieval import semantic_dedup

    I, D = random_knn(150, 4, seed=tasks)
    knn_dir, docs = write_knn(tmp_path, I, D, shard_rows=16, ingest_rows=[40, 0, 110])
    local = dedup_local(knn_dir, "s", docs, 0.95, tmp_path / "local")
    previous = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", str(tasks))
    try:
        info = run_distributed_dedup(spark, source="s", shards=knn_shards(knn_dir, "s"), docs_files=docs,
                                     threshold=0.95, out_root=tmp_path / "spark", n_tasks=tasks,
                                     single_task_edges=10_000 if tasks == 1 else 0)  # one task / rounds only
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", previous)
    assert info["shards"] == local["shards"] and len(info["shards"]) == 10
    if tasks == 1:
        assert info["cc_rounds"] == 0 and info["cc_one_task_edges"] > 0
    else:
        assert info["cc_rounds"] >= 2 and info["cc_one_task_edges"] == 0
    assert {k: info[k] for k in ("n_docs", "kept", "removed", "pairs")} == \
        {k: local[k] for k in ("n_docs", "kept", "removed", "pairs")}
    assert dedup_files(tmp_path / "spark", info) == dedup_files(tmp_path / "local", local)
    # and the in-process bytes are today's rule: semantic_dedup's keep mask and pairs
    ref = semantic_dedup(*load_knn(knn_dir, "s"), threshold=0.95)
    keep = np.concatenate([np.load(tmp_path / "spark" / s["keep"]) for s in info["shards"]])
    pairs = pa.concat_tables([pq.read_table(tmp_path / "spark" / s["pairs"]) for s in info["shards"]])
    assert np.array_equal(keep, ref.keep) and 0 < ref.n_removed < 150
    assert np.array_equal(np.stack([pairs["a"].to_numpy(), pairs["b"].to_numpy()], 1), ref.pairs)
    assert np.array_equal(pairs["cosine"].to_numpy(), ref.pair_cosine)
    assert pairs["doc_id_b"].to_pylist() == [f"doc-{b}" for b in ref.pairs[:, 1]]


def test_spark_dedup_edge_cases_and_bad_shards(spark, tmp_path):
    from mixweave.data.artifacts import knn_shards
    from mixweave.errors import InputError
    from mixweave.jobs.dedup import run_distributed_dedup
    from mixweave.pipeline.stages.dedup import dedup_local

    # no pairs at all; an empty source
    I, D = np.full((5, 1), -1, np.int64), np.full((5, 1), -np.inf, np.float32)
    for name, (I_, D_) in {"none": (I, D), "empty": (I[:0], D[:0])}.items():
        knn_dir, docs = write_knn(tmp_path / name, I_, D_, shard_rows=2, ingest_rows=[len(I_)])
        info = run_distributed_dedup(spark, source="s", shards=knn_shards(knn_dir, "s"), docs_files=docs,
                                     threshold=0.95, out_root=tmp_path / name / "spark")
        local = dedup_local(knn_dir, "s", docs, 0.95, tmp_path / name / "local")
        assert (info["kept"], info["removed"], info["pairs"]) == (len(I_), 0, 0)
        assert dedup_files(tmp_path / name / "spark", info) == dedup_files(tmp_path / name / "local", local)
    # a neighbour id past the source's end: one line naming the shard, no traceback
    I = np.array([[1], [0], [9]])
    knn_dir, docs = write_knn(tmp_path / "bad", I, np.ones((3, 1), np.float32), shard_rows=2, ingest_rows=[3])
    with pytest.raises(InputError, match=r"kNN shard at row 2: ids must be in \[-1, 3\)") as err:
        run_distributed_dedup(spark, source="s", shards=knn_shards(knn_dir, "s"), docs_files=docs, threshold=0.95,
                              out_root=tmp_path / "bad" / "spark")
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="ingest files 2"):
        run_distributed_dedup(spark, source="s", shards=knn_shards(knn_dir, "s"), docs_files=docs[:0] + [
            _ids(tmp_path / "two.parquet", 2)], threshold=0.95, out_root=tmp_path / "bad" / "spark2")
    (knn_dir / "s" / "D-00001.npy").unlink()  # a shard file gone: both paths say which, before any task runs
    for run in (lambda: dedup_local(knn_dir, "s", docs, 0.95, tmp_path / "bad" / "local"),
                lambda: run_distributed_dedup(spark, source="s", shards=knn_shards(knn_dir, "s"), docs_files=docs,
                                              threshold=0.95, out_root=tmp_path / "bad" / "spark3")):
        with pytest.raises(InputError, match=r"kNN shard file .*D-00001.npy cannot be read"):
            run()


def _ids(path, n):
    pq.write_table(pa.table({"doc_id": [f"d{i}" for i in range(n)]}), path)
    return path


def test_dedup_stage_spark_path_on_the_fixture_equals_the_local_path(spark, small_runs, tmp_path):
    """The reference run's dedup ran in process (30 documents < distributed_min_docs); the same
    stage with ``distributed_min_docs: 0`` on its real kNN shards writes the same bytes."""
    from mixweave.data.manifest import read_manifest
    from mixweave.pipeline.config import parse_config
    from mixweave.pipeline.runner import StageContext
    from mixweave.pipeline.stages.dedup import run_dedup_stage

    ref = small_runs.reference
    data = small_runs.config_data(ref, small_runs.globs)
    data["order"]["distributed_min_docs"] = 0
    ctx = StageContext(config=parse_config(data), out=tmp_path, overrides={"knn": ref / "knn", "ingest": ref / "ingest"})
    result = run_dedup_stage(ctx, tmp_path)
    local = read_manifest(ref / "dedup")
    assert result.counts == local["counts"]
    for source, entry in local["dedup"].items():
        spark_entry = result.extra["dedup"][source]
        assert (entry["path"], spark_entry["path"]) == ("local", "spark")
        assert len(entry["shards"]) == 2 and spark_entry["shards"] == entry["shards"]
        assert {k: spark_entry[k] for k in ("n_docs", "kept", "removed", "pairs")} == \
            {k: entry[k] for k in ("n_docs", "kept", "removed", "pairs")}
        assert dedup_files(tmp_path, spark_entry) == dedup_files(ref / "dedup", entry)
