"""k-nearest neighbours over L2-normalised embeddings: the ``(I, D)`` interchange format.

``I`` is int64 ``[N, k]`` (neighbour ids, best first, the document itself removed, ``-1`` where
fewer than ``k`` neighbours exist) and ``D`` is float32 ``[N, k]`` (cosine = inner product of unit
vectors; ``-inf`` where ``I == -1``). Every later ICP stage (dedup, traversal, metrics) reads only
these two arrays, so any search backend, or the official code's OIVF output, can feed them.

Backends (``method``):

* ``flat``  - exact inner product (faiss ``IndexFlatIP``). Cost O(N^2 d): ~4 min for 200k x 384 on
  2 cores, so ``auto`` uses it only up to ``exact_max_n`` documents (GPU: ``gpu_exact_max_n``).
* ``ivf``   - ``IndexIVFFlat``: k-means coarse quantiser trained on a seeded sample, ``nprobe``
  lists scanned per query. ~7x faster than flat at 200k; recall depends on the data (1.0 on
  clustered data, poor on isotropic noise). This is the paper's "offline IVF" pattern.
* ``ivfpq`` - ``IndexIVFPQ`` (the paper's IVF32768,PQ256): compressed codes, lower memory and recall.
* ``hnsw``  - ``IndexHNSWFlat``: no training, good recall, slow build; faiss builds the graph with
  several threads, so it is not bit-reproducible across runs/thread counts (all others are).
* ``torch`` - exact blocked matmul top-k in torch, for CUDA machines without faiss-gpu (also runs
  on CPU torch; used in tests against ``flat``).

``auto``: faiss-gpu present -> ``flat`` up to ``gpu_exact_max_n`` else ``ivf`` on the GPU; CUDA via
torch but no faiss-gpu -> ``torch``; otherwise ``flat`` up to ``exact_max_n`` else ``ivf``.

Scaling: queries are searched in blocks of ``query_block`` rows; with ``index_shard_size`` the base
vectors are split into shards, one index each (IVF shards share one trained quantiser), every
query block is searched against every shard and the per-shard top-k lists are merged
(:func:`merge_topk`). A Spark job uses the same pieces: :func:`build_index` on the driver from a
sample, faiss's own ``serialize_index`` to ship it, :func:`search_index` per query partition.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from typing import Any

import numpy as np

from mixweave.errors import ConfigError, InputError

log = logging.getLogger(__name__)

METHODS = ("auto", "flat", "ivf", "ivfpq", "hnsw", "torch")
EXACT_MAX_N = 50_000
"""Largest N searched exactly on CPU by ``method="auto"`` (~15 s at d=384 on 2 cores)."""
GPU_EXACT_MAX_N = 2_000_000
NORM_TOLERANCE = 1e-3


# --------------------------------------------------------------------------- validation


def l2_normalize(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32, C-contiguous); all-zero rows stay zero."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return np.ascontiguousarray(X / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def check_embeddings(X: Any) -> np.ndarray:
    """Return ``X`` as C-contiguous float32 ``[N, d]``; raise :class:`InputError` unless every row
    is finite and has unit L2 norm (cosine == inner product only for unit vectors)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"embeddings must be a non-empty 2-D array [N, d], got shape {X.shape}")
    if not np.isfinite(X).all():
        raise InputError("embeddings contain NaN or inf; re-run the embed stage")
    norms = np.linalg.norm(X, axis=1)
    bad = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
    if bad.size:
        raise InputError(
            f"{bad.size} embedding rows are not unit-norm (row {bad[0]} has norm {norms[bad[0]]:.4f});"
            " L2-normalise them first (mixweave.retrieval.knn.l2_normalize)"
        )
    return X


def check_knn(I: Any, D: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate an ``(I, D)`` pair: same shape ``[N, k]``, ids in ``[-1, N)`` (negatives are padding),
    finite weights wherever the id is valid. Returns (int64 I, float32 D)."""
    I = np.asarray(I)
    D = np.asarray(D)
    if I.ndim != 2 or D.shape != I.shape:
        raise InputError(f"I and D must be 2-D arrays of the same shape, got {I.shape} and {D.shape}")
    if I.size and not np.issubdtype(I.dtype, np.integer):
        raise InputError(f"I must hold integer ids, got dtype {I.dtype}")
    I = np.ascontiguousarray(I, dtype=np.int64)
    D = np.ascontiguousarray(D, dtype=np.float32)
    n = I.shape[0]
    if I.size and I.max() >= n:
        raise InputError(f"I refers to document {I.max()} but there are only {n} rows; "
                         "I must index the same documents as its rows")
    valid = I >= 0
    if not np.isfinite(D[valid]).all():
        raise InputError("D has NaN/inf where I holds a valid id; fix the kNN stage output")
    return I, D


# --------------------------------------------------------------------------- result helpers


def drop_self_matches(I: np.ndarray, D: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """From rows of k+1 results, drop each row's own id (wherever it ranks), or the last column
    when the row does not contain itself. Returns ``[N, k]``."""
    n = I.shape[0]
    is_self = I == np.arange(n, dtype=np.int64)[:, None]
    drop = is_self.copy()
    drop[~is_self.any(axis=1), -1] = True
    keep = ~drop
    return I[keep].reshape(n, k), D[keep].reshape(n, k)


def _pad(I: np.ndarray, D: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad/clean to exactly k columns with the ``-1``/``-inf`` convention."""
    n, have = I.shape
    if have < k:
        I = np.concatenate([I, np.full((n, k - have), -1, np.int64)], axis=1)
        D = np.concatenate([D, np.full((n, k - have), -np.inf, np.float32)], axis=1)
    I = np.ascontiguousarray(I, dtype=np.int64)
    D = np.ascontiguousarray(D, dtype=np.float32)
    D[I < 0] = -np.inf
    return I, D


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard top-k lists (global ids) into one top-k by descending score. Ties keep
    the earlier shard first (stable sort), so merging shards in id order is deterministic."""
    I = np.concatenate([p[0] for p in parts], axis=1)
    D = np.concatenate([p[1] for p in parts], axis=1).astype(np.float32)
    D = np.where(I < 0, -np.inf, D).astype(np.float32)
    order = np.argsort(-D, axis=1, kind="stable")[:, :k]
    return _pad(np.take_along_axis(I, order, 1), np.take_along_axis(D, order, 1), k)


def recall_at_k(I_approx: np.ndarray, I_exact: np.ndarray) -> float:
    """Mean over rows of |approx ∩ exact| / |exact| (``-1`` ignored): the share of true
    neighbours an approximate search found. Vectorised via row-offset keys and ``np.isin``."""
    I_approx = np.asarray(I_approx, dtype=np.int64)
    I_exact = np.asarray(I_exact, dtype=np.int64)
    if I_approx.shape[0] != I_exact.shape[0]:
        raise InputError("recall_at_k needs the same number of query rows in both arrays")
    width = int(max(I_approx.max(initial=0), I_exact.max(initial=0))) + 2
    rows_a = np.arange(I_approx.shape[0], dtype=np.int64)[:, None] * width
    rows_e = np.arange(I_exact.shape[0], dtype=np.int64)[:, None] * width
    keys_a = (rows_a + I_approx)[I_approx >= 0]
    keys_e = (rows_e + I_exact)[I_exact >= 0]
    if keys_e.size == 0:
        return 1.0
    return float(np.isin(keys_e, keys_a).sum() / keys_e.size)


def sampled_recall_at_k(X: np.ndarray, I: np.ndarray, *, sample_size: int = 1000, seed: int = 0) -> float:
    """Recall@k of self-excluded neighbour lists ``I`` ([N, k] over L2-normalised ``X``) against exact
    inner-product search, on a seeded sample of at most ``sample_size`` queries.

    Cost: O(sample_size x N x d) for the exact scores; the trade-off is a sampled estimate (its
    standard error shrinks as 1/sqrt(sample_size)) instead of an exact search of every query."""
    n = X.shape[0]
    sample = np.random.default_rng(seed).choice(n, size=min(n, sample_size), replace=False)
    exact = X[sample] @ X.T
    exact[np.arange(sample.size), sample] = -np.inf  # a document is not its own neighbour
    I_exact = np.argsort(-exact, axis=1, kind="stable")[:, : I.shape[1]]
    return recall_at_k(I[sample], I_exact)


# --------------------------------------------------------------------------- faiss backends


def _faiss():
    import faiss  # lazy: keeps `import mixweave.retrieval` light

    return faiss


def faiss_num_gpus() -> int:
    """Number of GPUs faiss can use (0 with faiss-cpu)."""
    faiss = _faiss()
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def torch_cuda_available() -> bool:
    """True if torch is installed and sees a CUDA device (imports torch only if installed and a GPU
    driver is present: :func:`mixweave.retrieval.encoder_backends.cuda_available`)."""
    if importlib.util.find_spec("torch") is None:
        return False
    from mixweave.retrieval.encoder_backends import cuda_available

    return cuda_available()


def default_nlist(n: int) -> int:
    """Power of two nearest 4*sqrt(N), capped at N/39 (faiss wants >= 39 training points per
    list) and 65536: 20k -> 512, 200k -> 2048, 1M -> 4096."""
    if n < 39:
        return 1
    target = 4.0 * math.sqrt(n)
    nlist = 2 ** int(round(math.log2(target)))
    return int(max(1, min(nlist, n // 39, 65536)))


def default_pq_m(d: int) -> int:
    """Largest divisor of d that is <= d/8 (8-bit codes, ~4 dims per byte); 384 -> 48."""
    for m in range(max(1, d // 8), 0, -1):
        if d % m == 0:
            return m
    return 1


def build_index(
    X_train: np.ndarray,
    *,
    method: str = "flat",
    nlist: int | None = None,
    pq_m: int | None = None,
    hnsw_m: int = 32,
    ef_construction: int = 40,
    n_total: int | None = None,
    seed: int = 0,
) -> Any:
    """An empty, trained faiss index for inner-product search (nothing added yet).

    ``X_train`` is the (already sampled) training set; ``n_total`` (default ``len(X_train)``) sizes
    the defaults for ``nlist``. Flat and HNSW need no training. k-means is seeded by ``seed``.
    """
    faiss = _faiss()
    d = X_train.shape[1]
    n_total = n_total or X_train.shape[0]
    if method == "flat":
        return faiss.IndexFlatIP(d)
    if method == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        return index
    if method not in ("ivf", "ivfpq"):
        raise ConfigError(f"unknown kNN method {method!r}; use one of {', '.join(METHODS)}")
    nlist = nlist or default_nlist(n_total)
    if nlist > X_train.shape[0]:
        raise ConfigError(f"nlist={nlist} exceeds the {X_train.shape[0]} training vectors; lower knn nlist")
    quantizer = faiss.IndexFlatIP(d)
    if method == "ivf":
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        pq_m = pq_m or default_pq_m(d)
        if d % pq_m:
            raise ConfigError(f"pq_m={pq_m} must divide the embedding dimension {d}")
        index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_m, 8, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = int(seed)
    index.train(np.ascontiguousarray(X_train, dtype=np.float32))
    return index  # faiss's Python layer keeps `quantizer` referenced by `index`


def set_search_params(index: Any, k: int, *, nprobe: int | None = None, ef_search: int = 64) -> None:
    """Set ``nprobe`` on IVF indexes (default ``max(8, nlist // 64)``, capped at nlist) and
    ``efSearch`` (at least k) on HNSW; other indexes are left alone."""
    if hasattr(index, "nprobe") and hasattr(index, "nlist"):
        index.nprobe = int(min(index.nlist, nprobe or max(8, index.nlist // 64)))
    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = max(int(ef_search), k)


def _to_gpu(index: Any) -> Any:
    faiss = _faiss()
    return faiss.index_cpu_to_all_gpus(index)


def search_index(
    index: Any,
    Q: np.ndarray,
    k: int,
    *,
    nprobe: int | None = None,
    ef_search: int = 64,
    query_block: int = 65_536,
    id_offset: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Search ``Q`` in blocks of ``query_block`` rows; ids are shifted by ``id_offset`` (the shard's
    first global id). Returns raw top-k (no self removal), ``-1``/``-inf`` padded."""
    set_search_params(index, k, nprobe=nprobe, ef_search=ef_search)
    n = Q.shape[0]
    I = np.empty((n, k), np.int64)
    D = np.empty((n, k), np.float32)
    for lo in range(0, n, query_block):
        hi = min(n, lo + query_block)
        d_blk, i_blk = index.search(np.ascontiguousarray(Q[lo:hi], dtype=np.float32), k)
        I[lo:hi] = i_blk
        D[lo:hi] = d_blk
    valid = I >= 0
    I[valid] += id_offset
    return _pad(I, D, k)


# --------------------------------------------------------------------------- torch backend


def knn_torch(
    X: np.ndarray,
    k: int,
    *,
    device: str | None = None,
    query_block: int = 4096,
    base_block: int = 262_144,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN by blocked matmul + top-k in torch, self excluded (the diagonal is masked).

    Memory is ``query_block x base_block`` scores at a time; running top-k lists are merged
    across base blocks, so N is limited only by the host copy of X. Cost O(N^2 d), on the GPU
    (fp32 matmul) when ``device`` is CUDA. For machines with CUDA but no faiss-gpu.
    """
    import torch

    X = check_embeddings(X)
    n = X.shape[0]
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    kk = min(k, n - 1)
    Xt = torch.from_numpy(X).to(dev)
    I_out = np.full((n, k), -1, np.int64)
    D_out = np.full((n, k), -np.inf, np.float32)
    if kk <= 0:
        return I_out, D_out
    for qlo in range(0, n, query_block):
        qhi = min(n, qlo + query_block)
        Q = Xt[qlo:qhi]
        best_d = torch.full((qhi - qlo, 0), float("-inf"), device=dev)
        best_i = torch.empty((qhi - qlo, 0), dtype=torch.int64, device=dev)
        for blo in range(0, n, base_block):
            bhi = min(n, blo + base_block)
            S = Q @ Xt[blo:bhi].T
            lo, hi = max(qlo, blo), min(qhi, bhi)
            if lo < hi:  # mask self-matches inside this tile
                r = torch.arange(lo, hi, device=dev)
                S[r - qlo, r - blo] = float("-inf")
            d_blk, i_blk = torch.topk(S, min(kk, bhi - blo), dim=1)
            cat_d = torch.cat([best_d, d_blk], dim=1)
            cat_i = torch.cat([best_i, i_blk + blo], dim=1)
            best_d, pos = torch.topk(cat_d, min(kk, cat_d.shape[1]), dim=1)
            best_i = torch.gather(cat_i, 1, pos)
        I_out[qlo:qhi, :kk] = best_i.cpu().numpy()
        D_out[qlo:qhi, :kk] = best_d.cpu().numpy()
    return _pad(I_out, D_out, k)


# --------------------------------------------------------------------------- entry point


def choose_method(n: int, method: str = "auto", *, exact_max_n: int = EXACT_MAX_N,
                  gpu_exact_max_n: int = GPU_EXACT_MAX_N) -> tuple[str, bool]:
    """Resolve ``method`` to (backend, use_faiss_gpu) as described in the module docstring."""
    if method not in METHODS:
        raise ConfigError(f"unknown kNN method {method!r}; use one of {', '.join(METHODS)}")
    gpus = faiss_num_gpus() if method != "torch" else 0
    if method != "auto":
        return method, gpus > 0 and method in ("flat", "ivf", "ivfpq")
    if gpus > 0:
        return ("flat" if n <= gpu_exact_max_n else "ivf"), True
    if torch_cuda_available():
        return "torch", False
    return ("flat" if n <= exact_max_n else "ivf"), False


def knn(
    X: np.ndarray,
    k: int,
    *,
    method: str = "auto",
    exact_max_n: int = EXACT_MAX_N,
    nlist: int | None = None,
    nprobe: int | None = None,
    pq_m: int | None = None,
    hnsw_m: int = 32,
    ef_search: int = 64,
    train_size: int | None = None,
    seed: int = 0,
    query_block: int = 65_536,
    index_shard_size: int | None = None,
    use_gpu: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of every row of ``X`` among the other rows (cosine, best first).

    ``X``: L2-normalised float32 ``[N, d]``. Returns ``I`` int64 ``[N, k]`` and ``D`` float32
    ``[N, k]``; the document itself is never its own neighbour; rows with fewer than ``k``
    results (N <= k, or IVF lists too short) are padded with ``-1`` / ``-inf``.
    IVF trains on ``train_size`` rows (default ``min(N, 64 * nlist)``) sampled with ``seed``;
    given the seed and thread count, all methods but ``hnsw`` are deterministic.
    ``nprobe`` defaults to ``max(8, nlist // 64)``; ``use_gpu=None`` means "if faiss sees one".
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"knn k must be a positive integer, got {k!r}")
    X = check_embeddings(X)
    n, d = X.shape
    backend, gpu = choose_method(n, method, exact_max_n=exact_max_n)
    if use_gpu is not None:  # faiss has no GPU HNSW; torch picks its own device
        gpu = bool(use_gpu) and backend in ("flat", "ivf", "ivfpq")
    t0 = time.perf_counter()
    if backend == "torch":
        I, D = knn_torch(X, k)
        log.info("knn torch exact: N=%d k=%d in %.1fs", n, k, time.perf_counter() - t0)
        return I, D

    kq = min(k + 1, n)  # +1: the self match, removed below
    train = X
    if backend in ("ivf", "ivfpq"):
        nl = nlist or default_nlist(n)
        size = min(n, train_size or 64 * nl)
        rng = np.random.default_rng(seed)
        train = X[np.sort(rng.choice(n, size=size, replace=False))] if size < n else X
        nlist = nl
    empty = build_index(train, method=backend, nlist=nlist, pq_m=pq_m, hnsw_m=hnsw_m,
                        n_total=n, seed=seed)
    t_train = time.perf_counter() - t0
    shard = int(index_shard_size or n)
    if shard < 1:
        raise ConfigError("index_shard_size must be >= 1")
    faiss = _faiss()
    parts = []
    for lo in range(0, n, shard):
        hi = min(n, lo + shard)
        index = faiss.clone_index(empty) if shard < n else empty
        set_search_params(index, kq, nprobe=nprobe, ef_search=ef_search)
        if gpu:  # the GPU copy inherits nprobe from the CPU index
            index = _to_gpu(index)
        index.add(X[lo:hi])
        parts.append(search_index(index, X, min(kq, hi - lo), nprobe=nprobe, ef_search=ef_search,
                                  query_block=query_block, id_offset=lo))
    I, D = parts[0] if len(parts) == 1 else merge_topk(parts, kq)
    I, D = drop_self_matches(*_pad(I, D, kq), kq - 1)
    I, D = _pad(I, D, k)  # only widens when N <= k
    log.info("knn %s%s: N=%d d=%d k=%d shards=%d train %.1fs total %.1fs", backend,
             " (gpu)" if gpu else "", n, d, k, len(parts), t_train, time.perf_counter() - t0)
    return I, D
