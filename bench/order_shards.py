"""The order stage's sharded Spark path against the in-process partitioned traversal, side by side.

    .venv/bin/python bench/order_shards.py                 # N = 20,000 and 80,000, 16 clusters
    .venv/bin/python bench/order_shards.py --sizes 50000 200000 --clusters 32

Per N (clustered unit vectors, d = 64, topics of ~50 documents, exact kNN k = 10, 5% of the
documents removed as by dedup; embed blocks of 4,096 rows, kNN/keep shards of 8,192 rows written
to a temporary folder):

* in process: ``load_embeddings`` + ``load_knn`` + ``load_keep`` + ``restrict_knn`` +
  ``partitioned_order`` (what the stage does for a small source);
* sharded: ``jobs.order.run_sharded_order`` on ``local[2]`` from the same files (a first warm-up
  call on the smallest N is not timed).

Both: wall time, the driver's peak Python heap (tracemalloc: numpy arrays are traced; the JVM and
the Spark workers are not) and whether the orders are equal. The targets: equal orders; the
sharded driver peak stays flat as N grows (its growth ratio is printed next to the in-process one).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))


def traced(fn, *args, **kwargs):
    tracemalloc.start()
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    wall = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, wall, peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 80_000])
    parser.add_argument("--clusters", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from test_jobs_order import write_shards
    from test_retrieval_partition import clustered

    from mixweave.data.artifacts import load_embeddings, load_keep, load_knn
    from mixweave.jobs.order import run_sharded_order
    from mixweave.jobs.spark import get_spark
    from mixweave.retrieval import knn
    from mixweave.retrieval.dedup import restrict_knn
    from mixweave.retrieval.partition import partitioned_order

    spark = get_spark("local[2]")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-order-") as tmp:
        for step, n in enumerate([min(args.sizes)] + list(args.sizes)):
            X = clustered(n, 64, max(2, n // 50), seed=args.seed)
            I, D = knn(X, 10, method="flat")
            keep = np.random.default_rng(args.seed).random(n) > 0.05
            root = Path(tmp) / f"n{n}-{step}"
            embed_rows = [4096] * (n // 4096) + ([n % 4096] if n % 4096 else [])
            embed, knn_dir, dedup = write_shards(root, X, I, D, keep, shard_rows=8192, embed_rows=embed_rows)
            del X, I, D

            def in_process():
                I, D = load_knn(knn_dir, "s")
                keep = load_keep(dedup, "s")
                kept = np.flatnonzero(keep)
                I_k, D_k = restrict_knn(I, D, keep)
                X = load_embeddings(embed, "s")[kept]
                return kept[partitioned_order(X, I_k, D_k, n_clusters=args.clusters, seed=args.seed)[0]]

            local, local_s, local_mb = traced(in_process)
            info, spark_s, spark_mb = traced(run_sharded_order, spark, embed_dir=embed, knn_dir=knn_dir, dedup_dir=dedup,
                                             source="s", out_dir=root / "order", n_clusters=args.clusters,
                                             seed=args.seed, work_dir=root)
            sharded = np.concatenate([np.load(root / "order" / f) for f in info["files"]])
            if step == 0:
                continue  # warm-up (Spark workers, numba caches): not reported
            rows.append((n, local_s, local_mb, spark_s, spark_mb, bool(np.array_equal(local, sharded)),
                         info["n_clusters"], info["metrics"]["mean_adjacent_cosine"]))
    print(f"{'N':>9} {'in-process s':>13} {'driver MB':>10} {'sharded s':>10} {'driver MB':>10} {'equal':>6} "
          f"{'clusters':>8} {'adj cos':>8}")
    for n, ls, lm, ss, sm, eq, c, adj in rows:
        print(f"{n:>9} {ls:>13.2f} {lm:>10.1f} {ss:>10.2f} {sm:>10.1f} {str(eq):>6} {c:>8} {adj:>8.4f}")
    if len(rows) >= 2:
        (n0, _, lm0, _, sm0, *_), (n1, _, lm1, _, sm1, *_) = rows[0], rows[-1]
        print(f"N x{n1 / n0:.1f}: in-process driver peak x{lm1 / lm0:.2f}, sharded driver peak x{sm1 / sm0:.2f}")
    spark.stop()


if __name__ == "__main__":
    main()
