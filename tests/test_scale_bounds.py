"""Bounded-memory readers of the ICP chain at corpus scale, against the whole-array results:
the report's adjacent cosines (order files and embed blocks memory-mapped, a seeded sample above
``max_pairs``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_retrieval_partition import clustered


def _manifest(folder, stage: str, **fields) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "_manifest.json").write_text(json.dumps({"stage": stage, "files": [], **fields}))


@pytest.fixture(scope="module")
def ordered_run(tmp_path_factory):
    """A run folder with an embed stage (3 uneven blocks) and an order stage (3 uneven files) of one
    source: 3,000 documents, 2,900 of them ordered (the rest removed by dedup)."""
    out = tmp_path_factory.mktemp("ordered_run")
    rng = np.random.default_rng(4)
    X = clustered(3000, 24, 30, seed=3)
    (out / "embed/s").mkdir(parents=True)
    files, at = [], 0
    for i, rows in enumerate((1000, 1, 1999)):
        np.save(out / f"embed/s/part-{i:05d}.npy", X[at:at + rows])
        files.append(f"s/part-{i:05d}.npy")
        at += rows
    _manifest(out / "embed", "embed", embeddings={"s": {"files": files, "dim": 24}})
    kept = rng.permutation(3000)[:2900].astype(np.int64)
    centres = np.random.default_rng(3).standard_normal((30, 24))  # clustered()'s centres: an ICP-like
    order = kept[np.argsort(np.argmax(X[kept] @ centres.T, axis=1), kind="stable")]  # order, by topic
    (out / "order/s").mkdir(parents=True)
    names = []
    for i, (lo, hi) in enumerate(((0, 700), (700, 701), (701, 2900))):
        np.save(out / f"order/s/order-{i:05d}.npy", order[lo:hi])
        names.append(f"s/order-{i:05d}.npy")
    _manifest(out / "order", "order", order={"s": {"files": names}})
    return out, X, order


def test_adjacent_cosines_every_pair_equals_the_whole_array_result(ordered_run):
    from mixweave.pipeline.report import adjacent_cosines

    out, X, order = ordered_run
    icp, random = adjacent_cosines(out, "s", seed=3)
    rand = np.random.default_rng(3).permutation(order)  # the whole-array computation it replaces
    assert np.array_equal(icp, np.einsum("ij,ij->i", X[order[:-1]], X[order[1:]]))
    assert np.array_equal(random, np.einsum("ij,ij->i", X[rand[:-1]], X[rand[1:]]))
    assert icp.dtype == random.dtype == np.float32


def test_adjacent_cosines_sample_above_max_pairs(ordered_run):
    """Above ``max_pairs``: ``max_pairs`` adjacent pairs of the order (each an exact cosine of a pair
    at distinct positions), seeded, and a histogram close to the whole one."""
    from mixweave.pipeline.report import adjacent_cosines

    out, X, order = ordered_run
    whole_icp = np.einsum("ij,ij->i", X[order[:-1]], X[order[1:]])
    icp, random = adjacent_cosines(out, "s", seed=1, max_pairs=1000)
    assert icp.size == random.size == 1000
    again = adjacent_cosines(out, "s", seed=1, max_pairs=1000)
    assert np.array_equal(icp, again[0]) and np.array_equal(random, again[1])
    assert not np.array_equal(icp, adjacent_cosines(out, "s", seed=2, max_pairs=1000)[0])
    # every sampled ICP cosine is one of the order's adjacent cosines, no position twice
    values, counts = np.unique(whole_icp, return_counts=True)
    got, got_counts = np.unique(icp, return_counts=True)
    assert np.isin(got, values).all() and (got_counts <= counts[np.searchsorted(values, got)]).all()
    # random pairs: two distinct documents (a document with itself would be cosine 1), distributed
    # as the adjacent pairs of a random permutation (the every-pair result)
    assert random.max() < 0.999
    bins = np.linspace(-0.2, 1.0, 25)
    whole_hist = np.histogram(whole_icp, bins)[0] / whole_icp.size
    assert np.abs(np.histogram(icp, bins)[0] / icp.size - whole_hist).max() < 0.05
    permuted = adjacent_cosines(out, "s", seed=1)[1]
    rand_whole = np.histogram(permuted, bins)[0] / permuted.size
    assert np.abs(np.histogram(random, bins)[0] / random.size - rand_whole).max() < 0.05
    assert icp.mean() > random.mean() + 0.1  # the ordered pairs stay far more similar


# ------------------------------------------------------------------- the trainer's pack dataset
@pytest.fixture(scope="module")
def many_file_pack(tmp_path_factory):
    """A pack of two sources in files of 3 windows (uint16 tokens, 17-token windows): 40 and 7 windows."""
    from mixweave.data.manifest import MANIFEST_NAME, atomic_stage_dir, build_manifest, write_json_atomic
    from mixweave.data.windows import windows_section, write_windows_files

    rng = np.random.default_rng(0)
    windows = {"a": rng.integers(0, 50257, (40, 17)).astype(np.uint16), "b": rng.integers(0, 50257, (7, 17)).astype(np.uint16)}
    out = tmp_path_factory.mktemp("many_file_pack") / "pack"
    with atomic_stage_dir(out) as tmp:
        per_source = {name: {"n_windows": int(w.shape[0]), "n_tokens": int(w.size), "dropped_tokens": 0,
                             "files": write_windows_files(tmp, name, w, per_file=3)} for name, w in windows.items()}
        tokenizer = {"name": "gpt2", "vocab_size": 50257, "eos_id": 50256, "dtype": "uint16"}
        manifest = build_manifest(stage="pack", stage_version=1, config={}, fingerprint_value="", inputs={}, root=tmp,
                                  extra={"windows": windows_section(16, True, tokenizer, per_source)})
        write_json_atomic(tmp / MANIFEST_NAME, manifest)
    return out


def test_pack_dataset_reads_every_window_through_a_bounded_cache(many_file_pack):
    """Every index gives read_windows' tokens (ints, negative ints, batches with repeats, slices of
    ``windows``, source_windows), while the cache never holds more than its files: 3 of 17."""
    import torch

    from mixweave.data.windows import read_windows
    from mixweave.trainer.dataset import PackDataset

    whole = np.concatenate([read_windows(many_file_pack, "b"), read_windows(many_file_pack, "a")])
    ds = PackDataset(many_file_pack, ["b", "a"], cache_bytes=3 * 3 * 17 * 2)
    assert ds.cache_files == 3 and len(ds._files) == 17 and len(ds) == 47
    assert ds.offsets.tolist() == [0, 7] and ds.counts.tolist() == [7, 40]
    held = []
    for i in range(-len(ds), len(ds)):
        item = ds[i]
        assert item.dtype == torch.int64 and torch.equal(item, torch.from_numpy(whole[i].astype(np.int64)))
        held.append(len(ds._cache))
    rng = np.random.default_rng(1)
    for _ in range(20):
        rows = rng.integers(0, len(ds), 9)
        assert np.array_equal(ds.batch(rows).numpy(), whole[rows])
        assert np.array_equal(ds.__getitems__(list(rows)).numpy(), whole[rows])
        held.append(len(ds._cache))
    assert max(held) == 3
    assert np.array_equal(ds.windows[5:30:4], whole[5:30:4]) and np.array_equal(ds.windows[-1], whole[-1])
    assert ds.windows.shape == whole.shape and np.array_equal(np.asarray(ds.windows), whole)
    assert np.array_equal(ds.source_windows("a"), whole[7:]) and ds.source_windows("b").dtype == np.uint16
    with pytest.raises(IndexError):
        ds[47]
    # a cache that holds the whole pack decodes each file once, as the old whole-array load did
    big = PackDataset(many_file_pack)
    for _ in range(3):
        assert np.array_equal(big.batch(np.arange(len(big))).numpy(), np.concatenate(
            [read_windows(many_file_pack, "a"), read_windows(many_file_pack, "b")]))
    assert big.decoded == 17 and big.names == ("a", "b")


# ------------------------------------------------------------------------------ cluster size caps
def giant_cluster(seed: int = 5) -> np.ndarray:
    """400 unit vectors: one topic of 300 documents (a cluster k-means keeps whole) and 5 of 20."""
    from mixweave.retrieval.knn import l2_normalize

    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.standard_normal((6, 16)))
    topic = np.r_[np.zeros(300, np.int64), np.repeat(np.arange(1, 6), 20)]
    rng.shuffle(topic)
    return l2_normalize(0.8 * centres[topic] + 0.6 * l2_normalize(rng.standard_normal((400, 16)))).astype(np.float32)


def test_split_oversized_cuts_equal_slabs_along_the_principal_direction():
    from mixweave.retrieval.partition import split_direction, split_oversized, split_scores

    X = giant_cluster()
    labels = np.r_[np.zeros(300, np.int64), np.full(100, 2)]  # labels 0 (300 docs), 2 (100), 1 empty
    new, split = split_oversized(X, labels, 70)
    assert split == 2 and np.array_equal(split_oversized(X, labels, 0)[0], labels)
    same, none = split_oversized(X, labels, 300)  # at the cap: nothing to split
    assert none == 0 and np.array_equal(same, labels)
    sizes = np.bincount(new)
    assert sizes[:3].tolist() == [0, 0, 0] and sizes[3:8].tolist() == [60] * 5 and sizes[8:].tolist() == [50, 50]
    score = split_scores(X[:300], split_direction(X[:300]))  # stride 1: the whole cluster is the sample
    for a, b in zip(range(3, 7), range(4, 8)):  # slabs are consecutive runs of the projection
        assert score[new[:300] == a].max() <= score[new[:300] == b].min()
    # a row's score does not depend on its batch
    v = split_direction(X[:300])
    assert np.array_equal(split_scores(X[:300], v)[17:40], split_scores(X[17:40], v))


@pytest.mark.spark
def test_max_cluster_docs_same_files_on_both_paths(spark, tmp_path):
    """One giant cluster: with order.max_cluster_docs the in-process partitioned walk (the stage's
    local path) and the Spark job give the same order files (element for element), every file at
    most the cap; without it the largest cluster is above the cap."""
    from test_jobs_order import write_shards

    from mixweave.jobs.order import run_sharded_order
    from mixweave.retrieval.dedup import restrict_knn
    from mixweave.retrieval.knn import knn
    from mixweave.retrieval.partition import partitioned_walk

    X = giant_cluster()
    I, D = knn(X, 6, method="flat")
    keep = np.random.default_rng(0).random(400) > 0.05
    embed, knn_dir, dedup = write_shards(tmp_path, X, I, D, keep, shard_rows=64, embed_rows=[150, 250])
    kept = np.flatnonzero(keep)
    I_k, D_k = restrict_knn(I, D, keep)

    def in_process(cap: int) -> list[np.ndarray]:  # the stage's local path (refinement off: a cheaper Spark job)
        path, plan, _ = partitioned_walk(X[kept], I_k, D_k, n_clusters=4, seed=0, refine_rounds=0, max_cluster_docs=cap)
        return np.split(kept[path], np.cumsum(np.bincount(plan.labels)[plan.cluster_order])[:-1])

    assert max(f.size for f in in_process(0)) > 80
    local = in_process(80)
    info = run_sharded_order(spark, embed_dir=embed, knn_dir=knn_dir, dedup_dir=dedup, source="s",
                             out_dir=tmp_path / "spark", n_clusters=4, seed=0, n_tasks=3, work_dir=tmp_path,
                             refine_rounds=0, max_cluster_docs=80)
    assert info["clusters_split"] >= 1 and len(info["files"]) == len(local)
    assert max(f.size for f in local) <= 80 and sum(f.size for f in local) == keep.sum()
    for name, want in zip(info["files"], local):
        assert np.array_equal(np.load(tmp_path / "spark" / name), want), name


# ------------------------------------------------------------------------ pack partitions
@pytest.mark.spark
def test_spark_pack_partitions_capped_apart_from_shard_rows(spark, tmp_path):
    """run_spark_pack cuts partitions of at most ``max_part_docs`` documents whatever ``part_docs``
    (the stage passes order.shard_rows), so a pack task's memory no longer follows the shard size:
    part_docs 10^6 with max_part_docs 4 gives partitions of <= 4 and the in-process pack's files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mixweave.data.tokenizer import load_tokenizer
    from mixweave.data.windows import write_windows_files
    from mixweave.jobs.pack import PART_DOCS_MAX, run_spark_pack
    from mixweave.retrieval.pack import pack_windows, spans_table

    rng = np.random.default_rng(3)
    words = "the of graph order window token cluster shard spark pack text model data".split()
    texts = [" ".join(rng.choice(words, int(rng.integers(3, 60)))) for _ in range(27)]
    docs = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": texts}), docs, row_group_size=10)
    order = rng.permutation(27).astype(np.int64)
    files = []
    for i, piece in enumerate(np.split(order, [9, 9, 20])):  # order files of 9, 0, 11, 7 documents
        files.append(tmp_path / f"order-{i:05d}.npy")
        np.save(files[-1], piece)
    tok = load_tokenizer("default")
    p = pack_windows(tok.encode_batch([texts[i] for i in order]), np.arange(27), seq_len=32, eos_id=tok.eos_id,
                     plus_one=False, shuffle=True, seed=7, dtype=np.dtype(tok.info["dtype"]))
    spans = spans_table(p)
    spans = spans.set_column(1, "doc", pa.array(order[spans.column("doc").to_numpy()], pa.int64()))
    ref_files = write_windows_files(tmp_path / "local", "s", p.windows, spans, per_file=5)
    res = run_spark_pack(spark, source="s", order_paths=files, docs_files=[docs], out_root=tmp_path / "spark",
                         work_dir=tmp_path / "work", tokenizer_path="default", tokenizer_pattern=None,
                         eos_id=tok.eos_id, dtype=tok.info["dtype"], seq_len=32, plus_one=False, shuffle=True, seed=7,
                         part_docs=10**6, per_file=5, n_tasks=2, max_part_docs=4)
    assert PART_DOCS_MAX == 16_384 and res["partitions"] == 3 + 3 + 2 and res["files"] == ref_files
    assert res["n_windows"] == p.n_windows > 5
    for kind in ("windows", "spans"):
        for path in sorted((tmp_path / "local" / kind / "s").iterdir()):
            assert path.read_bytes() == (tmp_path / "spark" / kind / "s" / path.name).read_bytes(), path


def test_ivf_train_sample_stops_growing_with_n():
    """The knn stage's driver sample: 64 rows a list up to TRAIN_MAX_ROWS, then flat (nlist ~4 sqrt(N)
    would grow it as sqrt(N)); an explicit train_size still wins."""
    from mixweave.retrieval.ivf_join import TRAIN_MAX_ROWS, resolve_nlist, train_sample

    assert train_sample(10**6, 512).size == 64 * 512 and train_sample(20_000, 512).size == 20_000
    assert resolve_nlist(10**6) == 4096 and train_sample(10**6, 4096).size == TRAIN_MAX_ROWS == 65_536
    assert train_sample(10**8, 16_384).size == TRAIN_MAX_ROWS
    assert train_sample(10**6, 4096, train_size=100_000).size == 100_000


def test_driver_row_samples_are_read_without_mapping_the_file(tmp_path):
    """``read_npy_rows`` (the driver's k-means / recall samples) equals memory-map indexing for any ids
    (unsorted, repeated, runs, across blocks), and a sparse sample of a 40 MB file leaves the process's
    file-backed resident memory flat (a mapped gather faults in ~64 KiB a row: the 10^6 run's 1.18 GB)."""
    from mixweave.data.artifacts import read_npy_rows
    from mixweave.data.artifacts import Blocks, RowReader

    rng = np.random.default_rng(0)
    paths = []
    for b, n in enumerate((40_000, 7, 1)):
        X = rng.standard_normal((n, 256)).astype(np.float32)
        paths.append(tmp_path / f"part-{b}.npy")
        np.save(paths[-1], X)
    blocks = Blocks.from_files(paths)
    ids = np.r_[rng.integers(0, blocks.n, 3000), [5, 6, 7, 8, 5, 40_000, 40_006, 40_007, 0]]
    mapped = RowReader(blocks).rows(ids)
    np.testing.assert_array_equal(RowReader(blocks, mapped=False).rows(ids), mapped)
    np.testing.assert_array_equal(read_npy_rows(str(paths[1]), np.array([], np.int64)), np.zeros((0, 256), np.float32))
    with pytest.raises(ValueError, match="beyond"):
        read_npy_rows(str(paths[1]), np.array([7]))

    def rss_file() -> int:
        for line in open("/proc/self/status"):
            if line.startswith("RssFile:"):
                return int(line.split()[1]) * 1024
        return 0

    sample = np.sort(rng.choice(40_000, 5000, replace=False))
    before = rss_file()
    rows = read_npy_rows(str(paths[0]), sample)
    assert rss_file() - before < 8 * 2**20 and rows.shape == (5000, 256)
