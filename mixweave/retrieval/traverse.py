"""Document ordering: the In-Context Pretraining paper's Algorithm 1 (approximate max-TSP).

Graph. An undirected graph over the N documents built from the kNN lists: an edge {i, j} exists
if j is in I[i] or i is in I[j]; its weight is the cosine D (when both directions list it, the
larger of the two values). Self matches and negative ids (``-1`` padding) are ignored.

Degree. The number of distinct neighbours of a document in that symmetrised graph, computed once
when the graph is built and never decremented. This is the paper's ``min_deg(D)`` read literally
(the degree in G; only the candidate set D shrinks); on clustered data it reaches 0.95 of the
mean-nearest-neighbour ceiling of adjacent cosine (bench/icp.py measures it). A static degree
needs no priority updates, so the restart candidate is simply the next unvisited document in a
list pre-sorted by (degree, id): O(N) overall, exactly reproducible, and easy to check against a
reference. (A "remaining unvisited degree" variant would need a bucket queue with O(Nk)
decrements; it is not implemented.)

Walk. Start at the unvisited document of minimum degree; repeatedly move to the unvisited
neighbour with the highest weight; when the current document has no unvisited neighbour, jump
(a zero-weight edge) to the unvisited document of minimum degree. Ties: among equal weights the
smaller neighbour id wins; among equal degrees the smaller document id wins (the paper picks a
random one; we prefer reproducibility). The result is a permutation of ``range(N)``.

Cost. ``traverse`` never materialises the merged graph: a document's out-list is its own kNN row
(read in place) and only the reverse lists are built, by one counting-sort transpose of the valid
kNN entries (O(Nk), one scattered write each, int32 ids below 2^31 documents). Degrees come from
merging each sorted out-row with its ascending in-list; the walk scans both lists (a neighbour
listed in both is seen twice, which cannot change the argmax) and keeps visited flags in a bitset;
the restart pointer runs over a counting sort by degree: no comparison sort at all. Memory: the
input plus ~8 bytes per valid kNN entry plus ~40 bytes per document, no Python object per
document (numba kernels, see ``_kernels``). Measured on one core (bench/icp.py): N=1e6, k=20 in
1.75 s, 0.61 GB peak; N=1e7 in 29 s, 4.5 GB peak of which 2.3 GB is the input.
:func:`build_graph` still gives the merged CSR for metrics and inspection.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from mixweave.errors import InputError
from mixweave.retrieval.knn import check_knn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnnGraph:
    """Symmetrised kNN graph in CSR form: row ``u``'s distinct neighbours are
    ``indices[indptr[u]:indptr[u+1]]`` with ``weights`` alongside (unsorted)."""

    indptr: np.ndarray  # int64 [N+1]
    indices: np.ndarray  # int64 [E]
    weights: np.ndarray  # float32 [E]

    @property
    def n(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @property
    def degree(self) -> np.ndarray:
        """Distinct neighbours per document (int64 [N])."""
        return np.diff(self.indptr)


def build_graph(I: np.ndarray, D: np.ndarray) -> KnnGraph:
    """Symmetrised, de-duplicated kNN graph (see module docstring) as CSR."""
    from mixweave.retrieval import _kernels

    I, D = check_knn(I, D)
    n, k = I.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k).reshape(n, k)
    valid = (I >= 0) & (I != rows)
    indptr, indices, weights = _kernels.symmetric_csr(n, rows[valid], I[valid], D[valid])
    return KnnGraph(indptr, indices, weights)


def _check_permutation(order: np.ndarray, n: int) -> None:
    if order.shape != (n,) or not np.array_equal(np.bincount(order, minlength=n), np.ones(n, np.int64)):
        raise AssertionError("internal error: traversal did not produce a permutation")  # a bug, not input


def traverse(I: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Order documents by the paper's Algorithm 1 (see module docstring for the exact rules).

    ``I`` int64 ``[N, k]`` neighbour ids (``-1`` padding and self matches allowed), ``D`` float32
    ``[N, k]`` similarities. Returns an int64 permutation of ``range(N)``: position t holds the
    document placed t-th. Deterministic; O(Nk) time and memory.
    """
    t0 = time.perf_counter()
    I, D = check_knn(I, D)
    order = _walk_knn(I, D)
    log.info("traverse: N=%d k=%d in %.2fs", I.shape[0], I.shape[1], time.perf_counter() - t0)
    return order


def _walk_knn(I: np.ndarray, D: np.ndarray, doc_rank: np.ndarray | None = None) -> np.ndarray:
    """Algorithm 1 over validated kNN arrays. Restarts follow (degree, id), or (doc_rank, degree,
    id) when ``doc_rank`` is given (clusters walked one after the other)."""
    from mixweave.retrieval import _kernels

    n = I.shape[0]
    proto = np.empty(0, np.int32 if n < np.iinfo(np.int32).max else np.int64)
    in_ptr, in_src, in_wt = _kernels.knn_in_lists(I, D, proto)
    degree = _kernels.knn_degrees(I, in_ptr, in_src)
    if doc_rank is None:
        start_order = _kernels.order_by_value(degree)
    else:
        start_order = np.lexsort((np.arange(n), degree, doc_rank)).astype(np.int64)
    order = _kernels.knn_walk(I, D, in_ptr, in_src, in_wt, start_order)
    _check_permutation(order, n)
    return order


def traverse_clustered(
    I: np.ndarray, D: np.ndarray, labels: np.ndarray, cluster_order: np.ndarray | None = None
) -> np.ndarray:
    """Algorithm 1 run inside each coarse cluster, clusters concatenated in ``cluster_order``.

    Edges between clusters are dropped, so each cluster is walked on its own (min-degree restarts
    stay inside the cluster, degrees count in-cluster neighbours only). The result equals
    concatenating ``traverse`` of each cluster's restricted kNN lists (so a Spark job can run one
    task per cluster, e.g. per IVF list). ``cluster_order`` (default: ascending label) lists every
    label once; :func:`order_clusters` derives it from centroids. One pass of the same kernels.
    """
    from mixweave.retrieval import _kernels

    I, D = check_knn(I, D)
    labels = np.asarray(labels)
    n = I.shape[0]
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be an integer array of length {n}, got {labels.shape} {labels.dtype}")
    uniq = np.unique(labels)
    if cluster_order is None:
        cluster_order = uniq
    cluster_order = np.asarray(cluster_order, dtype=np.int64)
    if not np.array_equal(np.sort(cluster_order), uniq):
        raise InputError("cluster_order must list every cluster label exactly once")
    rank = np.empty(uniq.size, np.int64)
    rank[np.searchsorted(uniq, cluster_order)] = np.arange(uniq.size)
    doc_rank = rank[np.searchsorted(uniq, labels)]

    I_in = _kernels.mask_cross_cluster(I, labels.astype(np.int64, copy=False))
    return _walk_knn(I_in, D, doc_rank)


def order_clusters(centroids: np.ndarray, k: int = 10) -> np.ndarray:
    """Order of clusters: Algorithm 1 over the exact kNN graph of the (normalised) centroids."""
    from mixweave.retrieval.knn import knn, l2_normalize

    C = l2_normalize(centroids)
    if C.shape[0] == 1:
        return np.zeros(1, np.int64)
    I, D = knn(C, min(k, C.shape[0] - 1), method="flat")
    return traverse(I, D)
