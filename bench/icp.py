"""In-Context Pretraining benchmark: kNN backends, traversal implementations, dedup and packing.

Everything is measured side by side in one run on the same seeded synthetic corpus: clustered
unit vectors (one centre per ~50 docs, each doc at cosine ~0.7 to its centre, like icp.md section 3).

* kNN: faiss exact flat vs IVF (time, recall@k against flat) at each N up to --flat-max-n.
* Traversal on the same (I, D) (IVF kNN, the production path above the exact threshold):
  - mixweave: numba Algorithm 1 (``mixweave.retrieval.traverse``), all N;
  - reference: the same Algorithm 1 in plain Python over a networkx graph, at N <= --ref-max-n,
    checked to give the identical permutation;
  - official: a re-implementation of swj0419/in-context-pretraining ``sort()`` (first unseen of
    knn[1:10], clusters capped at 21, Python set pop) and ``sort()+merge()`` with the minimal patch
    described in icp.md (scan all k columns, skip -1, skip docs without a cluster).
  Quality per order: mean adjacent cosine, ratio to the nearest-neighbour ceiling, jump rate.
* dedup and pack timings at the largest N.

Usage: ``python bench/icp.py`` (~2-3 min on 2 cores), ``--quick`` (N=20k only, ~30 s).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixweave.retrieval import knn, l2_normalize, pack_windows, recall_at_k, semantic_dedup, traverse  # noqa: E402
from mixweave.retrieval.metrics import order_metrics  # noqa: E402


def clustered_vectors(n: int, d: int, seed: int, docs_per_centre: int = 50, cos_to_centre: float = 0.7) -> np.ndarray:
    """Unit vectors at exactly ``cos_to_centre`` to one of n/docs_per_centre random centres."""
    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.standard_normal((max(1, n // docs_per_centre), d)))
    c = centres[rng.integers(0, centres.shape[0], n)]
    noise = rng.standard_normal((n, d)).astype(np.float32)
    noise -= (noise * c).sum(1, keepdims=True) * c
    noise = l2_normalize(noise)
    return l2_normalize(cos_to_centre * c + np.sqrt(1 - cos_to_centre**2) * noise)


# ----------------------------------------------------------------------------- reference (networkx)


def networkx_traverse(I: np.ndarray, D: np.ndarray) -> list[int]:
    """Algorithm 1 with the same rules as mixweave's, in plain Python over a networkx graph."""
    import networkx as nx

    n = I.shape[0]
    G = nx.Graph()
    G.add_nodes_from(range(n))
    for i, (ids, ws) in enumerate(zip(I.tolist(), D.tolist())):
        for v, w in zip(ids, ws):
            if v < 0 or v == i:
                continue
            e = G.get_edge_data(i, v)
            if e is None:
                G.add_edge(i, v, weight=w)
            elif w > e["weight"]:
                e["weight"] = w
    by_degree = sorted(range(n), key=lambda u: (G.degree(u), u))
    visited = [False] * n
    path: list[int] = []
    ptr = 0
    while len(path) < n:
        while visited[by_degree[ptr]]:
            ptr += 1
        cur = by_degree[ptr]
        while cur is not None:
            visited[cur] = True
            path.append(cur)
            best, best_key = None, None
            for v, attr in G.adj[cur].items():
                if not visited[v]:
                    key = (attr["weight"], -v)
                    if best_key is None or key > best_key:
                        best, best_key = v, key
            cur = best
    return path


# ----------------------------------------------------------------------------- official approach


def official_sort(knns: np.ndarray, cluster_size: int = 21):
    """swj0419 ``sort()``: knns has the doc itself in column 0 (faiss output); follows the first
    unseen of columns 1..9, opens a new cluster when stuck or when the cluster is full, and jumps
    with ``set.pop()``. Patch: -1 ids are skipped (the original would raise)."""
    n = knns.shape[0]
    seen: set = set()
    unseen = set(range(n))
    cluster2docs: dict = defaultdict(list)
    doc2cluster: dict = {}
    cluster_id, cur_len = 0, 0
    cur = unseen.pop()
    cluster2docs[cluster_id].append(cur)
    seen.add(cur)
    while unseen:
        first = None
        for k in knns[cur, 1:10]:
            if k >= 0 and k not in seen:
                first = int(k)
                break
        if first is None or cur_len >= cluster_size:
            cur = unseen.pop()
            cluster_id += 1
            cur_len = 0
        else:
            cur = first
            unseen.remove(cur)
        cluster2docs[cluster_id].append(cur)
        doc2cluster[cur] = cluster_id
        cur_len += 1
        seen.add(cur)
    return cluster2docs, doc2cluster


def official_merge(knns: np.ndarray, cluster2docs: dict, doc2cluster: dict, cluster_size: int = 21) -> None:
    """swj0419 ``merge()`` with icp.md's minimal patch: dissolve clusters smaller than cluster_size,
    inserting each doc before its first neighbour that lives in another cluster (all k columns,
    -1 skipped, docs without a cluster skipped); docs with no such neighbour stay where they are."""
    for cluster, docs in list(cluster2docs.items()):
        if len(docs) >= cluster_size:
            continue
        stranded = []
        for doc in docs:
            target = None
            for k in knns[doc, 1:]:
                kc = doc2cluster.get(int(k)) if k >= 0 else None
                if kc is not None and kc != cluster:
                    target = (int(k), kc)
                    break
            if target is None:
                stranded.append(doc)
                continue
            k_docs = cluster2docs[target[1]]
            k_docs.insert(k_docs.index(target[0]), doc)
            doc2cluster[doc] = target[1]
        if stranded:
            cluster2docs[cluster] = stranded
        else:
            del cluster2docs[cluster]


def flatten(cluster2docs: dict) -> np.ndarray:
    return np.fromiter((d for docs in cluster2docs.values() for d in docs), np.int64)


# ----------------------------------------------------------------------------- driver


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def quality(X, order, I, D) -> str:
    if np.unique(order).size != X.shape[0] or order.size != X.shape[0]:
        return f"NOT A PERMUTATION ({np.unique(order).size} unique of {X.shape[0]})"
    m = order_metrics(X, order, I, D)
    return (f"adjcos {m['mean_adjacent_cosine']:.3f} ({m['ratio_to_ceiling']:.2f} of ceiling)  "
            f"jump {m['jump_rate']:.3f}  segments {m['n_segments']}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="N=20k only")
    ap.add_argument("--sizes", default="20000,50000,200000")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--dim", type=int, default=64, help="embedding dim (traversal cost does not depend on it)")
    ap.add_argument("--flat-max-n", type=int, default=50_000, help="largest N for the exact flat baseline")
    ap.add_argument("--ref-max-n", type=int, default=50_000, help="largest N for the networkx reference")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    sizes = [20_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    k = args.k
    print(f"# ICP bench: k={k} d={args.dim} seed={args.seed} cpus={os.cpu_count()}  sizes={sizes}")

    # compile/load the numba kernels outside the timings
    warm = clustered_vectors(500, 8, 0)
    traverse(*knn(warm, 5, method="flat"))
    semantic_dedup(*knn(warm, 5, method="flat"))

    rows = []
    for n in sizes:
        X = clustered_vectors(n, args.dim, args.seed)
        print(f"\n## N={n:,}")
        (I, D), t_ivf = timed(knn, X, k, method="ivf", seed=args.seed)
        if n <= args.flat_max_n:
            (If, _), t_flat = timed(knn, X, k, method="flat")
            rec = recall_at_k(I, If)
            print(f"knn   flat {t_flat:7.2f}s | ivf {t_ivf:6.2f}s (recall@{k} {rec:.4f}) | "
                  f"flat/ivf {t_flat / t_ivf:5.1f}x")
        else:
            print(f"knn   flat   (not run: N > --flat-max-n) | ivf {t_ivf:6.2f}s")

        order, t_ours = timed(traverse, I, D)
        print(f"order mixweave numba       {t_ours:7.3f}s   {quality(X, order, I, D)}")
        if n <= args.ref_max_n:
            ref, t_ref = timed(networkx_traverse, I, D)
            same = "identical" if ref == order.tolist() else "DIFFERENT"
            print(f"order networkx reference   {t_ref:7.3f}s   {same} permutation   ref/numba {t_ref / t_ours:6.1f}x")
        else:
            t_ref = None
            print("order networkx reference   (not run: N > --ref-max-n)")
        knns = np.concatenate([np.arange(n, dtype=np.int64)[:, None], I], axis=1)  # faiss-style, self first
        (c2d, d2c), t_sort = timed(official_sort, knns)
        sort_order = flatten(c2d)
        print(f"order official sort()      {t_sort:7.3f}s   {quality(X, sort_order, I, D)}   "
              f"sort/numba {t_sort / t_ours:5.1f}x")
        _, t_merge = timed(official_merge, knns, c2d, d2c)
        merged = flatten(c2d)
        t_sm = t_sort + t_merge
        print(f"order official sort+merge  {t_sm:7.3f}s   {quality(X, merged, I, D)}   "
              f"(sort+merge)/numba {t_sm / t_ours:5.1f}x")
        rows.append((n, t_ours, t_ref, t_sort, t_sm))

    n = sizes[-1]
    res, t_dedup = timed(semantic_dedup, I, D, threshold=0.95)
    lengths = np.random.default_rng(1).integers(50, 500, n)
    flat = np.ones(int(lengths.sum()), np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    packed, t_pack = timed(pack_windows, flat, order, offsets=offsets, seq_len=2048, eos_id=0, seed=0)
    print(f"\ndedup (cos>=0.95) N={n:,}: {t_dedup:.3f}s, {res.n_removed} removed | "
          f"pack {flat.size / 1e6:.0f}M tokens -> {packed.n_windows:,} windows of 2048: {t_pack:.2f}s")

    print("\n## summary: traversal wall time (s) and ratios, same (I, D) per row")
    print(f"{'N':>8} {'numba':>8} {'networkx':>9} {'official sort':>14} {'sort+merge':>11} "
          f"{'nx/numba':>9} {'(s+m)/numba':>12}")
    for n, t_ours, t_ref, t_sort, t_sm in rows:
        ref = f"{t_ref:9.2f}" if t_ref is not None else f"{'-':>9}"
        ratio = f"{t_ref / t_ours:8.1f}x" if t_ref is not None else f"{'-':>9}"
        print(f"{n:>8} {t_ours:8.3f} {ref} {t_sort:14.2f} {t_sm:11.2f} {ratio} {t_sm / t_ours:11.1f}x")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
