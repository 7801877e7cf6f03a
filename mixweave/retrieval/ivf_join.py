"""The offline-IVF join: k nearest neighbours of every document as a join over coarse lists.

The ICP paper's ``OIVF`` pattern, cut into pure cores that a Spark job maps over lists and shards
(``mixweave.jobs.knn``) and that :func:`ivf_join_knn` composes in one process (the reference the
job must equal element for element):

1. :func:`train_centroids` - spherical FAISS k-means on a bounded, seeded sample
   (:func:`train_sample`: ``TRAIN_PER_LIST`` rows per list, at most ``TRAIN_MAX_PER_LIST``, and
   by default at most ``TRAIN_MAX_ROWS`` in all).
2. :func:`assign_lists` - each vector's ``nprobe`` nearest lists (as a query, best first) and its
   nearest list (as a member: column 0).
3. :func:`search_list` - the queries probing one list against the list's members: exact inner
   product, self excluded, per-query partial top-k.
4. :func:`merge_partials` - a query's partial lists into its final top-k.

Determinism. Scores are float64 GEMMs of the float32 vectors (exact products) rounded once to
float32, and every top-k is taken in a total order (higher cosine, then lower global index), so
a merge is associative and the result does not depend on how lists are grouped into tasks or
partials ordered. A list is always searched the same way (its queries sorted by id, in blocks of
``QUERY_BLOCK``), so the Spark job writes the same bytes as the in-process reference, on local[1]
or many partitions. Assignment ranks centroids with float64 scores, ties to the lower list.

Cost: training O(sample x nlist x d x niter); assignment O(N x nlist x d); the join
O(N x nprobe x N/nlist x d) (a fraction ~nprobe/nlist of exact search), plus the shuffle of
N x nprobe (list, id) pairs. Trade-off: recall@k grows with nprobe (``bench/knn_join.py`` measures
it); ``nprobe = nlist`` (or :func:`block_lists` with every query probing every block) is exact.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError
from .knn import default_nlist

TRAIN_PER_LIST = 64
"""k-means sample rows per list by default (faiss warns below 39)."""
TRAIN_MAX_PER_LIST = 256
"""The k-means sample never exceeds this many rows per list (bounded driver memory)."""
TRAIN_MAX_ROWS = 65_536
"""The default k-means sample never exceeds this many rows (96 MiB at d = 384), whatever nlist: with
nlist ~4 sqrt(N), 64 rows a list would grow the driver's sample as sqrt(N) (384 MiB at 10^6
documents). Above nlist 1024 a list gets fewer rows (16 at 4096); bench/knn_train_memory.py has
the driver peak, the module docstring of bench/knn_join.py the recall."""
DEFAULT_NPROBE = 8
"""Lists probed per query when ``nprobe`` is 0. bench/knn_join.py (N = 3x10^4, d = 384, k = 20,
nlist 512, two-level synthetic clusters): recall@20 0.873 / 0.958 / 0.985 / 0.989 / 0.992 at nprobe
1 / 2 / 4 / 8 / 16. 2 is the smallest reaching 0.95 there; 8 (the in-process IVF's floor too) keeps
a margin for real embeddings, whose neighbourhoods straddle more lists, at <= 1/3 of flat's time."""
QUERY_BLOCK = 1024
"""Queries scored at once inside a list (memory: QUERY_BLOCK x list members float64)."""


# --------------------------------------------------------------------------- settings


def resolve_nlist(n: int, nlist: int = 0) -> int:
    """``nlist`` (0 = auto: :func:`mixweave.retrieval.knn.default_nlist`, ~4 sqrt(N)), at most N."""
    if nlist < 0:
        raise ConfigError(f"order.ivf_nlist must be >= 0 (0 = auto), got {nlist}")
    return int(max(1, min(nlist or default_nlist(n), max(n, 1))))


def resolve_nprobe(nlist: int, nprobe: int = 0) -> int:
    """``nprobe`` (0 = :data:`DEFAULT_NPROBE`), at most ``nlist``."""
    if nprobe < 0:
        raise ConfigError(f"order.ivf_nprobe must be >= 0 (0 = default {DEFAULT_NPROBE}), got {nprobe}")
    return int(max(1, min(nprobe or DEFAULT_NPROBE, nlist)))


def train_sample(n: int, nlist: int, *, seed: int = 0, train_size: int | None = None) -> np.ndarray:
    """Sorted global indices of the k-means sample: ``train_size`` rows (default
    ``TRAIN_PER_LIST x nlist``, at most :data:`TRAIN_MAX_ROWS`), clamped to ``[nlist,
    TRAIN_MAX_PER_LIST x nlist]`` and to N, drawn without replacement with ``seed``. The default
    size never grows with N beyond that bound."""
    size = int(train_size or min(TRAIN_PER_LIST * nlist, TRAIN_MAX_ROWS))
    size = min(n, max(nlist, min(size, TRAIN_MAX_PER_LIST * nlist)))
    if size >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False)).astype(np.int64)


def train_centroids(X_sample: np.ndarray, nlist: int, *, seed: int = 0, niter: int = 20) -> np.ndarray:
    """Unit-norm coarse centroids float32 [nlist, d]: spherical FAISS k-means (seeded) on the
    sample; one list = the normalised mean. Cost O(sample x nlist x d x niter)."""
    X_sample = np.ascontiguousarray(X_sample, dtype=np.float32)
    size, d = X_sample.shape
    if nlist < 1 or nlist > size:
        raise ConfigError(f"ivf nlist={nlist} needs between 1 and {size} training vectors; lower order.ivf_nlist")
    if nlist == 1:
        mean = X_sample.mean(axis=0, keepdims=True)
        norm = float(np.linalg.norm(mean))
        return np.ascontiguousarray(mean / norm if norm > 0 else X_sample[:1], dtype=np.float32)
    import faiss

    kmeans = faiss.Kmeans(d, int(nlist), niter=int(niter), seed=int(seed), spherical=True, verbose=False,
                          max_points_per_centroid=size // nlist + 1, min_points_per_centroid=1)
    kmeans.train(X_sample)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


# --------------------------------------------------------------------------- top-k helper


def topk_by_row(rows: np.ndarray, ids: np.ndarray, scores: np.ndarray, n_rows: int, k: int,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of scattered entries ``(rows[i], ids[i], scores[i])`` per row in the total order
    (higher score, then lower id), repeated ``(row, id)`` pairs counted once. Returns I int64
    [n_rows, k] and D float32 [n_rows, k], ``-1``/``-inf`` padded. Cost O(E log E), E entries."""
    I = np.full((n_rows, k), -1, np.int64)
    D = np.full((n_rows, k), -np.inf, np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    valid = (ids >= 0) & np.isfinite(scores)
    rows, ids, scores = rows[valid], ids[valid], scores[valid]
    if rows.size == 0:
        return I, D
    order = np.lexsort((ids, -scores, rows))
    rows, ids, scores = rows[order], ids[order], scores[order]
    fresh = np.ones(rows.size, bool)
    fresh[1:] = (rows[1:] != rows[:-1]) | (ids[1:] != ids[:-1])
    rows, ids, scores = rows[fresh], ids[fresh], scores[fresh]
    first = np.searchsorted(rows, rows, side="left")
    rank = np.arange(rows.size) - first
    keep = rank < k
    I[rows[keep], rank[keep]] = ids[keep]
    D[rows[keep], rank[keep]] = scores[keep]
    return I, D


# --------------------------------------------------------------------------- cores


def assign_lists(X: np.ndarray, centroids: np.ndarray, nprobe: int) -> np.ndarray:
    """Each row's ``nprobe`` nearest lists (int64 [N, nprobe], best first, ties to the lower list):
    column 0 is the row's home list (where it is a member), all columns are the lists its query
    probes. float64 scores so that a row's lists do not depend on the rows around it.
    Cost O(N x nlist x d)."""
    nlist = centroids.shape[0]
    nprobe = int(min(nprobe, nlist))
    n = X.shape[0]
    if n == 0:
        return np.zeros((0, nprobe), np.int64)
    S = np.asarray(X, np.float64) @ np.asarray(centroids, np.float64).T
    if nprobe < nlist:
        kth = -np.partition(-S, nprobe - 1, axis=1)[:, nprobe - 1]
        rows, cols = np.nonzero(S >= kth[:, None])
    else:
        rows, cols = np.divmod(np.arange(n * nlist, dtype=np.int64), nlist)
    order = np.lexsort((cols, -S[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    rank = np.arange(rows.size) - np.searchsorted(rows, rows, side="left")
    keep = rank < nprobe
    probes = np.empty((n, nprobe), np.int64)
    probes[rows[keep], rank[keep]] = cols[keep]
    return probes


def block_lists(ids: np.ndarray, list_rows: int, n: int) -> np.ndarray:
    """The exact join's lists: list = ``id // list_rows`` (blocks of global index) and every query
    probes every block. Returns probes int64 [len(ids), n_blocks] with the home block first."""
    n_blocks = max(1, math.ceil(n / list_rows))
    home = np.asarray(ids, np.int64) // list_rows
    others = np.broadcast_to(np.arange(n_blocks, dtype=np.int64), (home.size, n_blocks))
    rest = others[others != home[:, None]].reshape(home.size, n_blocks - 1)
    return np.concatenate([home[:, None], rest], axis=1)


def _sorted_rows(I: np.ndarray, D: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row of candidate ids/scores (no id twice in a row) sorted by higher score then lower
    id, cut to k columns; non-finite scores become ``-1``/``-inf`` padding at the end."""
    D = np.where((I >= 0) & np.isfinite(D), D, -np.inf).astype(np.float32)
    I = np.where(np.isfinite(D), I, -1)
    order = np.lexsort((np.where(I >= 0, I, np.iinfo(np.int64).max), -D), axis=1)[:, :k]
    I, D = np.take_along_axis(I, order, 1), np.take_along_axis(D, order, 1)
    if I.shape[1] < k:
        I = np.concatenate([I, np.full((I.shape[0], k - I.shape[1]), -1, np.int64)], axis=1)
        D = np.concatenate([D, np.full((D.shape[0], k - D.shape[1]), -np.inf, np.float32)], axis=1)
    return np.ascontiguousarray(I, dtype=np.int64), np.ascontiguousarray(D, dtype=np.float32)


def search_list(q_ids: np.ndarray, Q: np.ndarray, m_ids: np.ndarray, M: np.ndarray, k: int, *,
                query_block: int = QUERY_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Partial top-k of the queries ``Q`` (global ids ``q_ids``) among one list's members ``M``
    (ids ``m_ids``), self excluded: I int64 [nq, k] (global ids), D float32 [nq, k], padded.

    Scores are a float64 GEMM per block of ``query_block`` queries (products of float32 inputs
    are exact in float64) rounded once to float32; the top-k is taken in the total order (higher
    cosine, then lower id), rows with ties at the k-th score through :func:`topk_by_row`. Both
    paths of the knn stage call this with the same blocks (a list's queries sorted by id, cut every
    ``query_block``), so they get the same bytes; other blockings can differ only where a float64
    rounding difference (~1e-16) crosses a float32 rounding boundary. Cost O(nq x m x d) in BLAS;
    memory query_block x m float64 scores."""
    q_ids = np.asarray(q_ids, np.int64)
    m_ids = np.asarray(m_ids, np.int64)
    nq, m = q_ids.size, m_ids.size
    I = np.full((nq, k), -1, np.int64)
    D = np.full((nq, k), -np.inf, np.float32)
    if nq == 0 or m == 0:
        return I, D
    M64 = np.asarray(M, np.float64)
    kk = min(k, m)
    for lo in range(0, nq, query_block):
        hi = min(nq, lo + query_block)
        S = (np.asarray(Q[lo:hi], np.float64) @ M64.T).astype(np.float32)
        S[q_ids[lo:hi, None] == m_ids[None, :]] = -np.inf
        top = np.argpartition(-S, kk - 1, axis=1)[:, :kk] if kk < m else np.broadcast_to(np.arange(m), (hi - lo, m))
        vals = np.take_along_axis(S, top, 1)
        kth = vals.min(axis=1)
        I[lo:hi], D[lo:hi] = _sorted_rows(m_ids[top], vals, k)
        tied = np.flatnonzero(np.isfinite(kth) & ((S >= kth[:, None]).sum(axis=1) > kk))
        if tied.size:  # several members share the k-th score: the lower ids win
            rows, cols = np.nonzero(S[tied] >= kth[tied, None])
            tI, tD = topk_by_row(rows, m_ids[cols], S[tied][rows, cols], tied.size, k)
            I[lo + tied], D[lo + tied] = tI, tD
    return I, D


def merge_partials(q_ids: np.ndarray, I: np.ndarray, D: np.ndarray, k: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge partial top-k rows (``q_ids`` may repeat, one row per list a query probed) into one
    top-k per query, higher cosine first then lower global index; a neighbour seen twice counts
    once. Returns (sorted unique query ids, I [nu, k], D [nu, k]). Order-independent: any grouping
    or order of the partial rows gives the same result. Cost O(R k log(R k))."""
    q_ids = np.asarray(q_ids, np.int64)
    unique, inverse = np.unique(q_ids, return_inverse=True)
    width = I.shape[1] if I.ndim == 2 else 0
    rows = np.repeat(inverse.astype(np.int64), width)
    I_out, D_out = topk_by_row(rows, np.asarray(I, np.int64).reshape(-1), np.asarray(D, np.float32).reshape(-1),
                               unique.size, k)
    return unique, I_out, D_out


def join_lists(X: np.ndarray, probes: np.ndarray, k: int, *, query_block: int = QUERY_BLOCK
               ) -> tuple[np.ndarray, np.ndarray]:
    """In-process join of all lists: ``probes`` [N, p] (column 0 = home list) as from
    :func:`assign_lists` or :func:`block_lists`; each list's members are searched by the queries
    probing it and the partials merged into a running top-k. Returns I [N, k], D [N, k]."""
    n = X.shape[0]
    I = np.full((n, k), -1, np.int64)
    D = np.full((n, k), -np.inf, np.float32)
    if n == 0:
        return I, D
    home = probes[:, 0]
    q_all = np.repeat(np.arange(n, dtype=np.int64), probes.shape[1])
    l_all = probes.reshape(-1)
    order = np.lexsort((q_all, l_all))
    q_all, l_all = q_all[order], l_all[order]
    m_order = np.argsort(home, kind="stable")
    m_sorted = home[m_order]
    lists, starts = np.unique(l_all, return_index=True)
    stops = np.append(starts[1:], l_all.size)
    for lst, lo, hi in zip(lists, starts, stops):
        q_ids = q_all[lo:hi]
        m_ids = m_order[np.searchsorted(m_sorted, lst, "left"):np.searchsorted(m_sorted, lst, "right")]
        pI, pD = search_list(q_ids, X[q_ids], m_ids, X[m_ids], k, query_block=query_block)
        # a member lives in one list, so the running top-k and this list's partial share no id
        I[q_ids], D[q_ids] = _sorted_rows(np.concatenate([I[q_ids], pI], axis=1),
                                          np.concatenate([D[q_ids], pD], axis=1), k)
    return I, D


def ivf_join_knn(X: np.ndarray, k: int, *, nlist: int = 0, nprobe: int = 0, seed: int = 0,
                 train_size: int | None = None, niter: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """The offline-IVF join in one process (the reference of ``mixweave.jobs.knn.run_knn_join``):
    train on :func:`train_sample`, :func:`assign_lists`, :func:`join_lists`. ``nlist``/``nprobe``
    0 = auto (:func:`resolve_nlist`, :func:`resolve_nprobe`); ``nprobe = nlist`` is exact.
    Returns I int64 [N, k], D float32 [N, k] (self excluded, padded)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = X.shape[0]
    nl = resolve_nlist(n, nlist)
    sample = train_sample(n, nl, seed=seed, train_size=train_size)
    centroids = train_centroids(X[sample], nl, seed=seed, niter=niter)
    return join_lists(X, assign_lists(X, centroids, resolve_nprobe(nl, nprobe)), k)


def exact_join_knn(X: np.ndarray, k: int, *, list_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN as the blocked join (:func:`block_lists`): every query against every block of
    ``list_rows`` rows. The reference of the Spark job's exact mode."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = X.shape[0]
    return join_lists(X, block_lists(np.arange(n), list_rows, n), k)
