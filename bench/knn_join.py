"""The offline-IVF kNN join: nprobe / recall@k / time, in process and on Spark local[2], against
exact FAISS flat, measured side by side in one run.

    .venv/bin/python bench/knn_join.py                      # N = 100,000 x 384, k = 20
    .venv/bin/python bench/knn_join.py --n 20000 --spark-nprobes 8   # a quick look
    .venv/bin/python bench/knn_join.py --json bench/knn_join.json

Data: seeded synthetic clustered unit vectors with two levels, as topics and subtopics of a
corpus: ``n / 150`` topic centres (random), 10 subtopics per topic at cosine 0.6 to their topic,
each document at a cosine drawn uniformly in [0.5, 0.8] to one subtopic (~15 documents per
subtopic; mean cosine of the 1st / 20th neighbour 0.52 / 0.25 at N = 20,000). A document's true
neighbours mostly share its subtopic, some its topic, so coarse lists split neighbourhoods and
recall depends on nprobe (the regime of real embeddings; single-level, well-separated clusters
would give recall 1.0 at nprobe 1).

Rows, for each nprobe (nlist = auto, ~4 sqrt(N)): recall@k against exact search over ALL queries,
wall time and the time ratio to FAISS flat for
  * ``faiss ivf``: FAISS IndexIVFFlat in one process (``retrieval.knn``, method ivf; own k-means),
  * ``join``: ``retrieval.ivf_join`` in one process (k-means trained once, timed apart),
  * ``spark``: ``jobs.knn.run_knn_join`` on local[2] reading 512-row .npy blocks, as the knn
    stage does (its time includes its own k-means on the driver); its shards must equal the
    in-process join byte for byte (printed).
The default nprobe (``retrieval.ivf_join.DEFAULT_NPROBE``) comes from this table: the smallest
nprobe whose join recall@k is >= 0.95, with a margin. The machine is shared: wall times carry the
load printed at the top.

Measured (2 shared cores, load 20 falling to 9 during the run, so times are noisy; N = 3x10^4
rather than 10^5 because exact flat alone would take ~15 min at that load):
``bench/knn_join.py --n 30000``: flat 82.5 s, nlist 512, join k-means 21.5 s.

    nprobe | faiss ivf recall  s    x flat | join recall  s    x flat | spark recall  s     x flat  = join
         1 |  0.8730         20.2  0.24   |  0.8732     34.8  0.42   |   -
         2 |  0.9580         24.7  0.30   |  0.9580     30.2  0.37   |   -
         4 |  0.9848         19.1  0.23   |  0.9848     35.6  0.43   |  0.9848     139.6  1.69    True
         8 |  0.9888         24.2  0.29   |  0.9888     26.2  0.32   |   -
        16 |  0.9915         15.7  0.19   |  0.9915     31.5  0.38   |  0.9915      75.0  0.91    True
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixweave.retrieval.knn import default_nlist, knn, l2_normalize, recall_at_k  # noqa: E402


def hierarchical_vectors(n: int, d: int, seed: int, docs_per_topic: int = 150, subtopics: int = 10) -> np.ndarray:
    """Module docstring's two-level clustered unit vectors (float32 [n, d])."""
    rng = np.random.default_rng(seed)

    def around(centres: np.ndarray, cos: np.ndarray) -> np.ndarray:
        noise = rng.standard_normal(centres.shape).astype(np.float32)
        noise -= (noise * centres).sum(1, keepdims=True) * centres
        noise = l2_normalize(noise)
        return l2_normalize(cos[:, None] * centres + np.sqrt(1 - cos[:, None] ** 2) * noise)

    topics = l2_normalize(rng.standard_normal((max(1, n // docs_per_topic), d)).astype(np.float32))
    subs = around(np.repeat(topics, subtopics, axis=0), np.full(topics.shape[0] * subtopics, 0.6, np.float32))
    X = np.empty((n, d), np.float32)
    for lo in range(0, n, 50_000):
        hi = min(n, lo + 50_000)
        X[lo:hi] = around(subs[rng.integers(0, subs.shape[0], hi - lo)],
                          rng.uniform(0.5, 0.8, hi - lo).astype(np.float32))
    return X


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nprobes", default="1,2,4,8,16")
    parser.add_argument("--spark-nprobes", default="4,16", help="nprobe values also run on Spark (each a full job)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    nprobes = [int(x) for x in args.nprobes.split(",") if x]
    spark_nprobes = [int(x) for x in args.spark_nprobes.split(",") if x]
    from mixweave.retrieval.ivf_join import assign_lists, join_lists, train_centroids, train_sample

    print(f"N={args.n} d={args.d} k={args.k} seed={args.seed} cores={os.cpu_count()} load(1/5/15 min)={load()}")
    X = hierarchical_vectors(args.n, args.d, args.seed)
    nlist = default_nlist(args.n)
    t = time.perf_counter()
    I_exact, _ = knn(X, args.k, method="flat")
    t_flat = time.perf_counter() - t
    print(f"faiss flat (exact): {t_flat:.1f} s   nlist (auto) = {nlist}   load={load()}")
    R: dict = {"n": args.n, "d": args.d, "k": args.k, "nlist": nlist, "flat_s": round(t_flat, 2), "rows": []}

    t = time.perf_counter()
    centroids = train_centroids(X[train_sample(args.n, nlist, seed=args.seed)], nlist, seed=args.seed)
    t_train = time.perf_counter() - t
    print(f"join k-means (sample {train_sample(args.n, nlist, seed=args.seed).size} rows): {t_train:.1f} s")
    R["join_train_s"] = round(t_train, 2)

    spark = blocks = tmp = None
    if spark_nprobes:
        from mixweave.jobs.knn import Blocks
        from mixweave.jobs.spark import get_spark

        spark = get_spark("local[2]", driver_memory="4g")
        tmp = tempfile.TemporaryDirectory(prefix="mixweave-knn-bench-")
        files = []
        for i, lo in enumerate(range(0, args.n, 512)):
            files.append(Path(tmp.name) / "embed" / f"part-{i:05d}.npy")
            files[-1].parent.mkdir(exist_ok=True)
            np.save(files[-1], X[lo:lo + 512])
        blocks = Blocks.from_files(files)

    header = f"{'nprobe':>6} | {'faiss ivf recall':>16} {'s':>7} {'x flat':>7} | {'join recall':>11} {'s':>7} {'x flat':>7}" \
             f" | {'spark recall':>12} {'s':>7} {'x flat':>7} {'= join':>6}"
    print(header)
    print("-" * len(header))
    for nprobe in nprobes:
        row: dict = {"nprobe": nprobe}
        t = time.perf_counter()
        I_f, _ = knn(X, args.k, method="ivf", nlist=nlist, nprobe=nprobe, seed=args.seed)
        row["faiss_ivf_s"], row["faiss_ivf_recall"] = round(time.perf_counter() - t, 2), round(recall_at_k(I_f, I_exact), 4)
        t = time.perf_counter()
        I_j, D_j = join_lists(X, assign_lists(X, centroids, nprobe), args.k)
        row["join_s"], row["join_recall"] = round(time.perf_counter() - t, 2), round(recall_at_k(I_j, I_exact), 4)
        cells = [f"{nprobe:>6}", f"{row['faiss_ivf_recall']:>16.4f} {row['faiss_ivf_s']:>7.1f} {row['faiss_ivf_s'] / t_flat:>7.2f}",
                 f"{row['join_recall']:>11.4f} {row['join_s']:>7.1f} {row['join_s'] / t_flat:>7.2f}"]
        if spark is not None and nprobe in spark_nprobes:
            from mixweave.jobs.knn import run_knn_join

            out = Path(tmp.name) / f"knn-{nprobe}" / "src"
            t = time.perf_counter()
            info = run_knn_join(spark, blocks, out, k=args.k, shard_rows=65_536, nlist=nlist, nprobe=nprobe,
                                seed=args.seed, recall_sample=0)
            row["spark_s"] = round(time.perf_counter() - t, 2)
            I_s = np.concatenate([np.load(out.parent / s["I"]) for s in info["shards"]])
            D_s = np.concatenate([np.load(out.parent / s["D"]) for s in info["shards"]])
            row["spark_recall"] = round(recall_at_k(I_s, I_exact), 4)
            row["spark_equals_join"] = bool(np.array_equal(I_s, I_j) and np.array_equal(D_s, D_j))
            row["spark_timings"] = {key: info[key] for key in ("train_s", "join_s")}
            cells.append(f"{row['spark_recall']:>12.4f} {row['spark_s']:>7.1f} {row['spark_s'] / t_flat:>7.2f}"
                         f" {str(row['spark_equals_join']):>6}")
        else:
            cells.append(f"{'-':>12} {'-':>7} {'-':>7} {'-':>6}")
        print(" | ".join(cells), flush=True)
        R["rows"].append(row)
    good = [r["nprobe"] for r in R["rows"] if r["join_recall"] >= 0.95]
    R["min_nprobe_recall_0_95"] = min(good) if good else None
    print(f"smallest nprobe with join recall@{args.k} >= 0.95: {R['min_nprobe_recall_0_95']}   load={load()}")
    if args.json:
        args.json.write_text(json.dumps(R, indent=2) + "\n")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
