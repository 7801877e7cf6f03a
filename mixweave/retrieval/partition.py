"""Partitioned ordering: ICP beyond one machine (the order stage's ``partitions`` setting).

The global walk (:func:`~mixweave.retrieval.traverse`) is one sequential pass over all N
documents. To spread it over machines the documents are split into coarse clusters and each
cluster is walked on its own:

1. **Clusters.** Spherical k-means (faiss, ``n_clusters`` centroids, ``niter`` iterations, seeded)
   trained on a seeded sample of ``train_size`` rows (default ``min(N, 128 * n_clusters)``), then
   every document goes to its nearest centroid (inner product): the IVF coarse quantiser of the
   paper's "offline IVF" pattern. Then ``refine_rounds`` (default 2) rounds of a weighted majority
   vote over the kNN rows move each document to the cluster where most of its neighbours' cosine
   mass lies (synchronous, ties keep the current cluster; ``refine_rounds=0`` keeps the pure IVF
   assignment). Why: in high dimensions a coarse centroid averages many topics, so the nearest-
   centroid assignment of one topic's documents is noisy and cuts many kNN edges (on bench/icp.py's
   100k spec set with 16 clusters only 37% of kNN entries stay inside a cluster and the walk loses 14% of its
   adjacent cosine); one vote round lifts that to 91% and a 0.7% loss, two to 94% and 0.3%. Each
   round is O(Nk) and data-parallel (a join of the kNN edges with the labels). Clusters that end
   up empty are dropped; each cluster's centroid is the normalised mean of its documents. With
   ``max_cluster_docs`` set, a cluster above it is cut into equal slabs along its top principal
   direction (:func:`split_oversized`), so a walk task holds at most that many documents.
2. **Walk per cluster.** A cluster's kNN rows are restricted to the cluster and renumbered to
   local ids (exactly :func:`~mixweave.retrieval.dedup.restrict_knn` with ``labels == c``), and
   Algorithm 1 runs on them; the local path is mapped back to global ids. Edges that cross
   clusters are dropped, and degrees count in-cluster neighbours only.
3. **Cluster order.** Algorithm 1 over the exact kNN graph of the non-empty centroids
   (:func:`~mixweave.retrieval.traverse.order_clusters`, ``k_centroids`` neighbours).
4. **Concatenate** the cluster paths in that order.

The in-process result (:func:`partitioned_order`, one pass of the traversal kernels via
:func:`~mixweave.retrieval.traverse.traverse_clustered`) and the Spark jobs
(``mixweave.jobs.order.run_sharded_order`` from the shards, one task per cluster, built from
:func:`kmeans_sample`, :func:`train_centroids`, :func:`assign_nearest`, :func:`vote_labels`,
:func:`centroid_sums` and :func:`walk_cluster`; ``run_partitioned_order`` from driver arrays) are
equal element for element, whatever the Spark partitioning: the k-means sample is drawn by
position among the documents, a document's label and vote depend on its own row only (near-tied
centroid scores are re-scored exactly), centroid sums are exact integers, and every cluster's walk
is a pure function of its block.

Quality. Only the edges between clusters are lost, plus one jump per cluster boundary. On the
100k clustered spec set of bench/icp.py (2,000 topics of 50 documents, d=768, exact k=50) the partitioned walk
loses 0.26-0.31% of the global walk's mean adjacent cosine with 16, 64 or 256 clusters and the
default refinement (14% at 16 clusters without it); bench/icp.py measures it.
``info["edge_retention"]``, the share of kNN entries that stay inside their cluster, predicts the
loss before any walk.

Determinism: the same seed and thread count give the same clusters (faiss k-means training is
seeded; it runs on the driver on both paths, and may differ in the last bit across thread counts).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from mixweave.errors import ConfigError, InputError
from mixweave.retrieval.knn import check_embeddings, check_knn

log = logging.getLogger(__name__)

TRAIN_POINTS_PER_CLUSTER = 128
"""Default k-means sample: this many rows per centroid (faiss warns below 39)."""


@dataclass(frozen=True)
class PartitionPlan:
    """Coarse clusters of the documents and the order in which they are walked."""

    labels: np.ndarray  # int64 [N]: centroid index of every document
    centroids: np.ndarray  # float32 [C, d]: unit-norm k-means centroids (empty clusters included)
    cluster_order: np.ndarray  # int64 [C']: the non-empty cluster labels, in walk order
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterBlocks:
    """Every cluster's restricted kNN rows, grouped: rows ``offsets[c]:offsets[c+1]`` of
    ``ids``/``weights`` belong to cluster ``c``; ``members`` holds their global ids (ascending)."""

    members: np.ndarray  # int64 [N]: global ids grouped by cluster label, ascending inside one
    offsets: np.ndarray  # int64 [C+1]
    ids: np.ndarray  # int32 [N, k]: cluster-local neighbour ids, -1 padding at the row end
    weights: np.ndarray  # float32 [N, k]: cosines, -inf where ids == -1

    def block(self, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(members, local ids, weights) of cluster ``c``."""
        lo, hi = int(self.offsets[c]), int(self.offsets[c + 1])
        return self.members[lo:hi], self.ids[lo:hi], self.weights[lo:hi]


def kmeans_sample(n: int, n_clusters: int, *, seed: int = 0, train_size: int | None = None) -> np.ndarray | None:
    """Sorted positions of the k-means training rows among ``n`` rows (``None``: all rows): a seeded
    draw of ``min(n, train_size or 128 * C)`` rows that depends on ``n``, ``C`` and the seed only,
    so the in-process path and the Spark job (which reads just these rows) train on the same rows."""
    c = int(min(n_clusters, n))
    size = int(min(n, train_size or TRAIN_POINTS_PER_CLUSTER * c))
    if size < c:
        raise ConfigError(f"train_size={size} is below n_clusters={c}; raise the k-means sample")
    if size >= n:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def train_centroids(train: np.ndarray, n_clusters: int, *, seed: int = 0, niter: int = 20) -> np.ndarray:
    """Spherical faiss k-means (seeded) on the sample rows ``train``; float32 [C, d] unit centroids."""
    import faiss

    size, d = train.shape
    c = int(min(n_clusters, size))
    kmeans = faiss.Kmeans(d, c, niter=int(niter), seed=int(seed), spherical=True, verbose=False,
                          max_points_per_centroid=size // c + 1, min_points_per_centroid=1)
    kmeans.train(np.ascontiguousarray(train, dtype=np.float32))
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


TIE_EPS = 1e-4
"""float32 scores this close to a row's best are re-scored exactly (see :func:`assign_nearest`)."""


def assign_nearest(X: np.ndarray, centroids: np.ndarray, block: int = 65_536) -> np.ndarray:
    """Nearest centroid (inner product) of every row, as a pure function of the row: float32 BLAS
    scores, then rows whose runner-up is within :data:`TIE_EPS` of the best are re-scored among
    those candidates with exactly rounded float64 sums (``math.fsum`` of exact products), ties to
    the lower centroid index. So the label never depends on the batch a row is scored in (BLAS
    may round a row differently in another block shape or thread count). O(N C d)."""
    import math

    X = np.asarray(X, np.float32)
    C = np.ascontiguousarray(centroids, dtype=np.float32)
    C64 = C.astype(np.float64)
    labels = np.empty(X.shape[0], np.int64)
    for lo in range(0, X.shape[0], block):
        S = X[lo:lo + block] @ C.T
        best = S.argmax(axis=1)
        top = S[np.arange(S.shape[0]), best]
        near = S >= (top - TIE_EPS)[:, None]
        for r in np.flatnonzero(near.sum(axis=1) > 1):
            x = X[lo + r].astype(np.float64)
            cands = np.flatnonzero(near[r])
            exact = [math.fsum(x * C64[c]) for c in cands]
            best[r] = cands[int(np.argmax(exact))]  # argmax: first (lowest index) among equal maxima
        labels[lo:lo + block] = best
    return labels


def coarse_clusters(X: np.ndarray, n_clusters: int, *, seed: int = 0, train_size: int | None = None,
                    niter: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means on a seeded sample (:func:`kmeans_sample`, :func:`train_centroids`), then
    nearest-centroid assignment of every row (:func:`assign_nearest`).

    Returns (labels int64 [N], centroids float32 [C, d]) with ``C = min(n_clusters, N)``.
    """
    X = check_embeddings(X)
    n = X.shape[0]
    if not isinstance(n_clusters, (int, np.integer)) or n_clusters < 1:
        raise ConfigError(f"n_clusters must be a positive integer, got {n_clusters!r}")
    c = int(min(n_clusters, n))
    if c == 1:
        centroid = X.mean(axis=0, keepdims=True)
        norm = float(np.linalg.norm(centroid))
        return np.zeros(n, np.int64), (centroid / norm if norm > 0 else X[:1]).astype(np.float32)
    sample = kmeans_sample(n, c, seed=seed, train_size=train_size)
    centroids = train_centroids(X if sample is None else X[sample], c, seed=seed, niter=niter)
    return assign_nearest(X, centroids), centroids


def refine_labels(I: np.ndarray, D: np.ndarray, labels: np.ndarray, rounds: int = 2) -> np.ndarray:
    """``rounds`` synchronous rounds of the weighted kNN majority vote (module docstring)."""
    from mixweave.retrieval import _kernels

    I, D = check_knn(I, D)
    labels = _check_labels(labels, I.shape[0])
    if rounds < 0:
        raise ConfigError(f"refine_rounds must be >= 0, got {rounds}")
    n_labels = int(labels.max()) + 1 if labels.size else 0
    for _ in range(int(rounds)):
        new = _kernels.refine_labels_round(I, D, labels, n_labels)
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


def vote_labels(offsets: np.ndarray, nb_labels: np.ndarray, nb_weights: np.ndarray,
                current: np.ndarray) -> np.ndarray:
    """One vote round (:func:`refine_labels`) over rows given as lists: row ``r``'s neighbours are
    entries ``offsets[r]:offsets[r+1]`` (their current labels and cosines, in kNN-row order, self
    matches and removed documents already left out), ``current`` the rows' own labels. Equal to
    the kernel: float64 sums of max(cosine, 0) per label accumulated in row order; a row keeps its
    label when that label's sum is the largest, else takes the smallest label with the largest sum.
    Vectorised numpy, O(E log E) for E entries; the Spark job's refinement runs it per batch."""
    current = np.asarray(current, np.int64)
    offsets = np.asarray(offsets, np.int64)
    nb_labels = np.asarray(nb_labels, np.int64)
    new = current.copy()
    if nb_labels.size == 0:
        return new
    n_labels = int(max(nb_labels.max(), current.max())) + 1
    row = np.repeat(np.arange(current.size, dtype=np.int64), np.diff(offsets))
    keys, inverse = np.unique(row * n_labels + nb_labels, return_inverse=True)
    score = np.bincount(inverse.reshape(-1), weights=np.maximum(np.asarray(nb_weights, np.float32), 0),
                        minlength=keys.size)  # sequential float64 adds in entry order, as the kernel
    key_row, key_label = keys // n_labels, keys % n_labels
    starts = np.flatnonzero(np.r_[True, key_row[1:] != key_row[:-1]])
    rows = key_row[starts]
    row_max = np.maximum.reduceat(score, starts)
    at_max = np.flatnonzero(score == np.repeat(row_max, np.diff(np.r_[starts, keys.size])))
    best = key_label[at_max[np.searchsorted(at_max, starts)]]  # smallest label at the maximum
    own = rows * n_labels + current[rows]
    pos = np.minimum(np.searchsorted(keys, own), keys.size - 1)
    own_score = np.where(keys[pos] == own, score[pos], 0.0)
    new[rows] = np.where(own_score >= row_max, current[rows], best)
    return new


FIXED_POINT = float(2 ** 32)
"""Scale of the integer centroid sums (exact, so partial sums merge in any order)."""


def centroid_sums(X: np.ndarray, labels: np.ndarray, n_labels: int) -> np.ndarray:
    """int64 [n_labels, d]: per-cluster sums of the rows rounded to multiples of 2^-32. Integer sums
    are exact, so sums of any split of the rows (Spark tasks) add up to the same bytes; unit rows
    keep 2^31 documents per cluster below overflow."""
    X = np.asarray(X, np.float32)
    labels = np.asarray(labels, np.int64)
    sums = np.zeros((n_labels, X.shape[1]), np.int64)
    order = np.argsort(labels, kind="stable")
    block = 65_536
    for lo in range(0, order.size, block):  # blocked segment sums: no [N, d] temporary
        idx = order[lo:lo + block]
        lab = labels[idx]
        starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
        fixed = np.rint(X[idx].astype(np.float64) * FIXED_POINT).astype(np.int64)
        sums[lab[starts]] += np.add.reduceat(fixed, starts, axis=0)
    return sums


def centroids_from_sums(sums: np.ndarray) -> np.ndarray:
    """Normalised cluster means (float32; zero rows for empty clusters) from :func:`centroid_sums`."""
    means = np.asarray(sums, np.float64) / FIXED_POINT
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    return (means / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def cluster_centroids(X: np.ndarray, labels: np.ndarray, n_labels: int) -> np.ndarray:
    """Normalised mean of each cluster's rows (float32 [n_labels, d]; zero rows for empty ones),
    from exact fixed-point sums (:func:`centroid_sums`)."""
    return centroids_from_sums(centroid_sums(X, labels, n_labels))


SPLIT_SAMPLE = 1024
"""Rows (about) from which an oversized cluster's split direction is estimated."""


def split_plan(sizes: dict[int, int], max_cluster_docs: int) -> list[tuple[int, int, int, int, int]]:
    """``(label, size, pieces, stride, base)`` of each cluster above ``max_cluster_docs`` (0 = off),
    ascending by label: ``pieces = ceil(size / max)``, the split sample takes every ``stride``-th
    member (by ascending id), and the pieces get the new labels ``base .. base + pieces - 1``, after
    every label in ``sizes``. Depends on the cluster sizes only (metadata: one entry per cluster)."""
    if max_cluster_docs <= 0 or not sizes:
        return []
    plan, base = [], max(sizes) + 1
    for label in sorted(sizes):
        size = int(sizes[label])
        if size > max_cluster_docs:
            pieces = -(-size // int(max_cluster_docs))
            plan.append((int(label), size, pieces, max(1, size // SPLIT_SAMPLE), base))
            base += pieces
    return plan


def split_direction(sample: np.ndarray) -> np.ndarray:
    """float64 [d]: the top principal direction of the (centred) sample rows, its largest-magnitude
    component positive (a unique sign)."""
    Y = np.asarray(sample, np.float64)
    Y = Y - Y.mean(axis=0, keepdims=True)
    v = np.linalg.svd(Y, full_matrices=False)[2][0] if Y.shape[0] > 1 else np.eye(Y.shape[1])[0]
    return v if v[np.argmax(np.abs(v))] > 0 else -v


def split_scores(X: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """float64 projection of every row on ``direction``: row-wise float64 sums, so a row's score
    does not depend on the batch it is scored in."""
    return (np.asarray(X, np.float32).astype(np.float64) * np.asarray(direction, np.float64)).sum(axis=1)


def split_pieces(scores: np.ndarray, ids: np.ndarray, pieces: int) -> np.ndarray:
    """Piece of each member of one cluster: members ranked by (score, id) and cut into ``pieces``
    contiguous runs of equal size (+-1): every piece holds at most ``ceil(size / pieces)``."""
    size = int(np.asarray(ids).size)
    rank = np.empty(size, np.int64)
    rank[np.lexsort((np.asarray(ids), np.asarray(scores)))] = np.arange(size, dtype=np.int64)
    return rank * int(pieces) // max(size, 1)


def split_oversized(X: np.ndarray, labels: np.ndarray, max_cluster_docs: int) -> tuple[np.ndarray, int]:
    """Cap cluster sizes (``max_cluster_docs``, 0 = off): each cluster above it is cut into
    ``ceil(size / max)`` slabs of equal size along its top principal direction (estimated from
    every ``stride``-th member, about :data:`SPLIT_SAMPLE` rows), members ranked by projection;
    the slabs get new labels (:func:`split_plan`). Returns (labels, clusters split).

    Why slabs, not a second k-means: the cap holds exactly in one pass (k-means pieces are as
    uneven as the clusters they split), the rank cut is a sort Spark does with spilling, and a slab
    is still a contiguous region of the cluster (its kNN edges mostly stay inside; those across a
    cut are lost, like the edges across clusters). Cost: O(size d) per oversized cluster."""
    labels = np.asarray(labels, np.int64)
    if max_cluster_docs <= 0 or labels.size == 0:
        return labels, 0
    sizes = np.bincount(labels)
    plan = split_plan({int(c): int(sizes[c]) for c in np.flatnonzero(sizes)}, max_cluster_docs)
    if not plan:
        return labels, 0
    X = np.asarray(X, np.float32)
    new = labels.copy()
    for label, _size, pieces, stride, base in plan:
        members = np.flatnonzero(labels == label)
        direction = split_direction(X[members[::stride]])
        new[members] = base + split_pieces(split_scores(X[members], direction), members, pieces)
    return new, len(plan)


def plan_partitions(X: np.ndarray, *, n_clusters: int, seed: int = 0, k_centroids: int = 10,
                    train_size: int | None = None, niter: int = 20, I: np.ndarray | None = None,
                    D: np.ndarray | None = None, refine_rounds: int = 2, max_cluster_docs: int = 0) -> PartitionPlan:
    """Clusters (:func:`coarse_clusters`, then :func:`refine_labels` when the kNN arrays ``I``,
    ``D`` are given) and their walk order (:func:`order_clusters` over the non-empty clusters'
    centroids). Runs on the driver; cost O(N C d) for the assignment, O(Nk) per vote round."""
    from mixweave.retrieval.traverse import order_clusters

    t0 = time.perf_counter()
    labels, kmeans_centroids = coarse_clusters(X, n_clusters, seed=seed, train_size=train_size, niter=niter)
    t1 = time.perf_counter()
    n_labels = kmeans_centroids.shape[0]
    info: dict = {}
    if I is not None and D is not None:
        I, D = check_knn(I, D)
        if I.shape[0] != labels.size:
            raise InputError(f"X has {labels.size} rows but the kNN arrays have {I.shape[0]}")
        info["edge_retention_kmeans"] = round(edge_retention(I, labels), 6)
        labels = refine_labels(I, D, labels, refine_rounds)
        info["edge_retention"] = round(edge_retention(I, labels), 6)
    labels, split = split_oversized(X, labels, max_cluster_docs)
    if split:
        n_labels = int(labels.max()) + 1
        info["clusters_split"] = split
    t2 = time.perf_counter()
    sizes = np.bincount(labels, minlength=n_labels)
    nonempty = np.flatnonzero(sizes)
    centroids = cluster_centroids(np.asarray(X, np.float32), labels, n_labels)
    cluster_order = nonempty[order_clusters(centroids[nonempty], k=k_centroids)]
    t3 = time.perf_counter()
    kept = sizes[nonempty]
    info = {
        "n_docs": int(labels.size),
        "n_clusters_requested": int(n_clusters),
        "n_clusters": int(nonempty.size),
        "cluster_size_min": int(kept.min()),
        "cluster_size_median": float(np.median(kept)),
        "cluster_size_max": int(kept.max()),
        "k_centroids": int(k_centroids),
        "refine_rounds": int(refine_rounds) if I is not None else 0,
        "max_cluster_docs": int(max_cluster_docs),
        "seed": int(seed),
        **info,
        "kmeans_assign_s": round(t1 - t0, 4),
        "refine_s": round(t2 - t1, 4),
        "order_clusters_s": round(t3 - t2, 4),
    }
    return PartitionPlan(labels, centroids, cluster_order.astype(np.int64), info)


def cluster_blocks(I: np.ndarray, D: np.ndarray, labels: np.ndarray) -> ClusterBlocks:
    """Every cluster's kNN rows restricted to the cluster, renumbered to local ids, in one O(Nk)
    pass. ``block(c)`` equals ``restrict_knn(I, D, labels == c)`` (ids as int32)."""
    from mixweave.retrieval import _kernels

    I, D = check_knn(I, D)
    labels = _check_labels(labels, I.shape[0])
    n_labels = int(labels.max()) + 1 if labels.size else 0
    members = np.argsort(labels, kind="stable").astype(np.int64)
    offsets = np.zeros(n_labels + 1, np.int64)
    np.cumsum(np.bincount(labels, minlength=n_labels), out=offsets[1:])
    local_id = np.empty(labels.size, np.int64)
    local_id[members] = np.arange(labels.size, dtype=np.int64) - offsets[labels[members]]
    ids, weights = _kernels.cluster_local_knn(I, D, members, labels, local_id)
    return ClusterBlocks(members, offsets, ids, weights)


def walk_cluster(members: np.ndarray, ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Algorithm 1 on one cluster's local kNN rows; returns the path as global ids (int64)."""
    from mixweave.retrieval.traverse import traverse

    members = np.asarray(members, dtype=np.int64)
    if members.size == 0:
        return members
    return members[traverse(ids, weights)]


def edge_retention(I: np.ndarray, labels: np.ndarray) -> float:
    """Share of the valid, non-self kNN entries whose two documents share a cluster."""
    I = np.asarray(I)
    rows = np.arange(I.shape[0])[:, None]
    valid = (I >= 0) & (I != rows)
    if not valid.any():
        return 1.0
    same = labels[np.where(valid, I, 0)] == labels[:, None]
    return float((same & valid).sum() / valid.sum())


def partitioned_walk(X: np.ndarray, I: np.ndarray, D: np.ndarray, *, n_clusters: int, seed: int = 0,
                     k_centroids: int = 10, train_size: int | None = None, niter: int = 20,
                     refine_rounds: int = 2, max_cluster_docs: int = 0) -> tuple[np.ndarray, PartitionPlan | None, dict]:
    """:func:`partitioned_order` that also returns the plan (cluster labels and walk order), so a
    caller can cut the order at cluster boundaries (``np.bincount(plan.labels)[plan.cluster_order]``)."""
    from mixweave.retrieval.traverse import traverse_clustered

    I, D = check_knn(I, D)
    X = check_embeddings(X) if I.shape[0] else np.asarray(X, np.float32)
    if X.shape[0] != I.shape[0]:
        raise InputError(f"X has {X.shape[0]} rows but the kNN arrays have {I.shape[0]}")
    if I.shape[0] == 0:
        return np.zeros(0, np.int64), None, {"n_docs": 0, "n_clusters": 0}
    plan = plan_partitions(X, n_clusters=n_clusters, seed=seed, k_centroids=k_centroids, train_size=train_size,
                           niter=niter, I=I, D=D, refine_rounds=refine_rounds, max_cluster_docs=max_cluster_docs)
    t0 = time.perf_counter()
    order = traverse_clustered(I, D, plan.labels, plan.cluster_order)
    info = dict(plan.info, traverse_s=round(time.perf_counter() - t0, 4))
    log.info("partitioned order: N=%d clusters=%d edge retention %.4f", order.size, info["n_clusters"],
             info["edge_retention"])
    return order, plan, info


def partitioned_order(X: np.ndarray, I: np.ndarray, D: np.ndarray, *, n_clusters: int, seed: int = 0,
                      k_centroids: int = 10, train_size: int | None = None, niter: int = 20,
                      refine_rounds: int = 2, max_cluster_docs: int = 0) -> tuple[np.ndarray, dict]:
    """In-process partitioned traversal (module docstring): the exact result the Spark job
    ``mixweave.jobs.order.run_sharded_order`` produces from the shards. Returns (int64 permutation, info)."""
    order, _, info = partitioned_walk(X, I, D, n_clusters=n_clusters, seed=seed, k_centroids=k_centroids,
                                      train_size=train_size, niter=niter, refine_rounds=refine_rounds,
                                      max_cluster_docs=max_cluster_docs)
    return order, info


def _check_labels(labels: np.ndarray, n: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,) or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise InputError(f"labels must be an integer array of length {n}, got {labels.shape} {labels.dtype}")
    labels = labels.astype(np.int64, copy=False)
    if labels.size and labels.min() < 0:
        raise InputError("cluster labels must be >= 0")
    return labels
