"""Quality metrics for a document order and its packed windows (the order and pack stages' metrics.json).

Compare orders on the same kNN input, the same (post-dedup) documents and the same packing.
All functions are vectorised numpy over the embeddings ``X`` (unit rows), the kNN arrays and
the order; no Python loop per document.

* adjacent cosine: cos(E(d_t), E(d_t+1)) along the order; its mean against a random order (~0)
  and against the ceiling mean_d max_{d' != d} cos(d, d') (the mean nearest-neighbour cosine);
* path objective: sum of kNN-edge weights along the order / (N-1), jumps counting 0 (the max-TSP
  objective of Algorithm 1); jump rate: share of adjacent pairs that are not kNN-graph edges;
* segments: runs between jumps (restarts, length distribution, share of docs in short runs);
* windows: mean pairwise cosine of the documents inside a window, share of windows whose
  consecutive documents are all kNN-adjacent ("related"), share containing a jump or a pair below
  the random-pair 90th percentile, and cosine of adjacent window centroids before/after shuffling.
"""

from __future__ import annotations

import numpy as np

from mixweave.errors import InputError
from mixweave.retrieval.knn import check_knn


def check_order(order: np.ndarray, n: int) -> np.ndarray:
    """Return ``order`` as int64; raise :class:`InputError` unless it is a permutation of range(n)."""
    order = np.asarray(order, dtype=np.int64).reshape(-1)
    if order.size != n or (n and (order.min() < 0 or order.max() >= n)) \
            or not (np.bincount(order, minlength=n) == 1).all():
        raise InputError(f"order must be a permutation of range({n}) (every document exactly once)")
    return order


def adjacent_cosine(X: np.ndarray, order: np.ndarray, block: int = 1 << 20) -> np.ndarray:
    """float32 [len(order)-1]: cosine of each consecutive pair along ``order`` (unit rows of X)."""
    order = np.asarray(order, dtype=np.int64)
    out = np.empty(max(order.size - 1, 0), np.float32)
    for lo in range(0, out.size, block):
        hi = min(out.size, lo + block)
        out[lo:hi] = np.einsum("ij,ij->i", X[order[lo:hi]], X[order[lo + 1:hi + 1]])
    return out


GRAM_MAX_ROWS = 2048
"""Up to this many rows :func:`random_pair_cosines` reads the pairs from the Gram matrix (16 MiB at most)."""


def random_pairs(n: int, n_pairs: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` seeded random pairs ``(a, b)`` of distinct row indices below ``n`` (``a != b`` when n > 1)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n, n_pairs)
    return a, (a + rng.integers(1, max(n, 2), n_pairs)) % n


def random_pair_cosines(X: np.ndarray, n_pairs: int = 20_000, seed: int = 0) -> np.ndarray:
    """Cosines of ``n_pairs`` random distinct pairs (a seeded baseline distribution).

    Up to :data:`GRAM_MAX_ROWS` rows the cosines are read from ``X @ X.T`` (one GEMM over ``n^2`` entries)
    instead of gathering ``2 x n_pairs`` rows of ``X`` (~60 MB at d=384; 10-25x slower for a source of
    tens to hundreds of documents): the same pairs, equal to float rounding (~1e-7)."""
    a, b = random_pairs(X.shape[0], n_pairs, seed)
    if X.shape[0] <= GRAM_MAX_ROWS:
        return (X @ X.T)[a, b].astype(np.float32)
    return np.einsum("ij,ij->i", X[a], X[b]).astype(np.float32)


def nearest_neighbour_ceiling(I: np.ndarray, D: np.ndarray) -> float:
    """Mean over documents of the best non-self cosine in the kNN lists (upper bound on the
    mean adjacent cosine of any order)."""
    I, D = check_knn(I, D)
    n = I.shape[0]
    valid = (I >= 0) & (I != np.arange(n)[:, None])
    best = np.where(valid, D, -np.inf).max(axis=1, initial=-np.inf)
    best = best[np.isfinite(best)]
    return float(best.mean()) if best.size else 0.0


def edge_lookup(I: np.ndarray, D: np.ndarray):
    """Closure ``(u, v) -> (is_edge bool[], weight float32[])`` over the symmetrised kNN graph."""
    from mixweave.retrieval.traverse import build_graph

    graph = build_graph(I, D)
    n = graph.n
    rows = np.repeat(np.arange(n, dtype=np.int64), graph.degree)
    keys = rows * n + graph.indices
    sort = np.argsort(keys, kind="stable")
    keys, weights = keys[sort], graph.weights[sort]

    def lookup(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(u, np.int64) * n + np.asarray(v, np.int64)
        pos = np.minimum(np.searchsorted(keys, q), max(keys.size - 1, 0))
        hit = keys[pos] == q if keys.size else np.zeros(q.shape, bool)
        return hit, np.where(hit, weights[pos] if keys.size else 0, 0).astype(np.float32)

    return lookup


def segment_lengths(is_edge: np.ndarray) -> np.ndarray:
    """Lengths of the runs of documents joined by edges, given per-adjacent-pair ``is_edge``."""
    n = is_edge.size + 1
    cuts = np.flatnonzero(~is_edge) + 1
    bounds = np.concatenate([[0], cuts, [n]])
    return np.diff(bounds)


def window_metrics(X: np.ndarray, span_window: np.ndarray, span_doc: np.ndarray, window_perm: np.ndarray,
                   lookup, cos_floor: float) -> dict:
    """Coherence inside windows and diversity between adjacent windows (spans sorted by
    (window, start), as ``pack_windows`` returns them)."""
    n_win = int(window_perm.size)
    if n_win == 0:
        return {"n_windows": 0}
    sw, sd = np.asarray(span_window, np.int64), np.asarray(span_doc, np.int64)
    docs_per_window = np.bincount(sw, minlength=n_win)
    same = sw[1:] == sw[:-1]
    u, v, w_of = sd[:-1][same], sd[1:][same], sw[1:][same]
    is_edge, _ = lookup(u, v)
    cos_uv = np.einsum("ij,ij->i", X[u], X[v])
    jump_in = np.bincount(w_of[~is_edge], minlength=n_win) > 0
    unrelated_in = np.bincount(w_of[cos_uv < cos_floor], minlength=n_win) > 0
    multi = docs_per_window >= 2

    sums = np.zeros((n_win, X.shape[1]), np.float64)
    np.add.at(sums, sw, X[sd])
    sq = np.einsum("ij,ij->i", X[sd], X[sd]).astype(np.float64)
    self_sq = np.bincount(sw, weights=sq, minlength=n_win)
    m = docs_per_window.astype(np.float64)
    pairwise = ((sums * sums).sum(1) - self_sq) / np.maximum(m * (m - 1), 1)

    cent = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    shuffled_adj = np.einsum("ij,ij->i", cent[:-1], cent[1:])
    stream = cent[np.argsort(window_perm)]  # rows back in stream order
    stream_adj = np.einsum("ij,ij->i", stream[:-1], stream[1:])
    return {
        "n_windows": n_win,
        "docs_per_window_mean": float(m.mean()),
        "window_pairwise_cosine_mean": float(pairwise[multi].mean()) if multi.any() else float("nan"),
        "share_windows_related": float((~jump_in[multi]).mean()) if multi.any() else float("nan"),
        "share_windows_with_jump": float(jump_in.mean()),
        "share_windows_with_unrelated_pair": float(unrelated_in.mean()),
        "adjacent_window_centroid_cosine_stream": float(stream_adj.mean()) if n_win > 1 else float("nan"),
        "adjacent_window_centroid_cosine_shuffled": float(shuffled_adj.mean()) if n_win > 1 else float("nan"),
    }


def order_metrics(X: np.ndarray, order: np.ndarray, I: np.ndarray, D: np.ndarray, *, packed=None,
                  short_segment: int = 4, seed: int = 0) -> dict:
    """All order metrics as a flat dict (validity checked first). ``packed``: an optional
    :class:`~mixweave.retrieval.pack.PackedWindows` built from this order for the window metrics.
    ``short_segment``: segments shorter than this many documents count as "short"."""
    X = np.asarray(X, dtype=np.float32)
    I, D = check_knn(I, D)
    n = I.shape[0]
    if X.shape[0] != n:
        raise InputError(f"X has {X.shape[0]} rows but the kNN arrays have {n}")
    order = check_order(order, n)
    lookup = edge_lookup(I, D)
    adj = adjacent_cosine(X, order)
    is_edge, w = lookup(order[:-1], order[1:])
    rand_order = np.random.default_rng(seed).permutation(n)
    rand_adj = adjacent_cosine(X, rand_order)
    ceiling = nearest_neighbour_ceiling(I, D)
    seg = segment_lengths(is_edge)
    pairs = random_pair_cosines(X, seed=seed)
    cos_floor = float(np.quantile(pairs, 0.9)) if pairs.size else 0.0
    out = {
        "n_docs": n,
        "coverage": 1.0,
        "mean_adjacent_cosine": float(adj.mean()) if adj.size else float("nan"),
        "p10_adjacent_cosine": float(np.quantile(adj, 0.1)) if adj.size else float("nan"),
        "p50_adjacent_cosine": float(np.quantile(adj, 0.5)) if adj.size else float("nan"),
        "random_order_mean_adjacent_cosine": float(rand_adj.mean()) if rand_adj.size else float("nan"),
        "nn_ceiling": ceiling,
        "ratio_to_ceiling": float(adj.mean() / ceiling) if adj.size and ceiling > 0 else float("nan"),
        "path_objective": float(w.sum() / max(n - 1, 1)),
        "jump_rate": float((~is_edge).mean()) if is_edge.size else 0.0,
        "random_order_jump_rate": float((~lookup(rand_order[:-1], rand_order[1:])[0]).mean()) if n > 1 else 0.0,
        "n_segments": int(seg.size),
        "segment_length_median": float(np.median(seg)),
        "segment_length_max": int(seg.max()),
        "share_docs_in_short_segments": float(seg[seg < short_segment].sum() / n),
        "random_pair_cosine_p90": cos_floor,
    }
    if packed is not None:
        out.update(window_metrics(X, packed.span_window, packed.span_doc, packed.window_perm, lookup, cos_floor))
    return out
