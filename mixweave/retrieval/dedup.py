"""Semantic near-duplicate removal from the kNN scores (the paper's App. A.1 step).

Pairs. Every kNN entry ``(i, I[i, j])`` with cosine ``D[i, j] >= threshold`` is a duplicate pair
(stored once as ``i < j``; if both directions list it, the larger cosine is kept).

Components. Duplicate pairs are closed transitively with an array-based union-find (path
compression, the smaller root wins), so a chain a~b~c is one component even if cos(a, c) is below
the threshold: the same choice as SemDeDup-style clustering, and the only one that is independent
of processing order.

Keep policy. One document per component survives: the one with the smallest index (the first
in corpus order), so the result is deterministic and needs no extra signal. Component ids are
that kept document's index.

Default threshold 0.95: the paper does not state its threshold. With sentence encoders such as
MiniLM/Contriever, cosine >= 0.95 is reached essentially only by (near-)verbatim copies:
boilerplate, mirrored pages, templated text with a few changed fields. Topical neighbours, which
ICP wants *next to each other*, typically score 0.5-0.9. Lower values (SemDeDup uses ~0.90-0.93)
remove more, at the risk of deleting paraphrased but distinct documents; log and report the
threshold with the counts. Only pairs present in the kNN lists can be found: a document with
more than k exact copies still reaches all of them through the union-find unless the copies are
split across disjoint lists.

Cost: O(Nk) to select pairs, O(P log N) union-find (numba), no Python object per document.

Shards. The same rule runs shard by shard for sources beyond one process (``jobs/dedup.py``):
:func:`shard_pairs` selects one kNN shard's pairs in global ids (the shard's rows only; a pair seen
from both sides is merged by :func:`merge_pairs`, max cosine), :func:`local_stars` closes them
inside the shard into ``(node, component minimum)`` edges, which have the same connected
components as the shard's pairs, and the cross-shard closure runs on those star edges.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from mixweave.errors import ConfigError, InputError
from mixweave.retrieval.knn import check_knn

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.95


@dataclass(frozen=True)
class DedupResult:
    keep: np.ndarray  # bool [N]: True for the document kept from each component
    pairs: np.ndarray  # int64 [P, 2], rows (i, j) with i < j, sorted; cosine >= threshold
    pair_cosine: np.ndarray  # float32 [P]
    component: np.ndarray  # int64 [N]: index of the kept document of each document's component
    threshold: float

    @property
    def n_removed(self) -> int:
        return int((~self.keep).sum())

    def component_sizes(self) -> np.ndarray:
        """Sizes of the components with >= 2 documents, in order of their kept document."""
        sizes = np.bincount(self.component, minlength=self.keep.size)
        return sizes[sizes >= 2]

    def summary(self) -> dict:
        """Counts for the stage manifest and report."""
        sizes = self.component_sizes()
        return {
            "metric": "cosine",
            "threshold": self.threshold,
            "n_docs": int(self.keep.size),
            "n_kept": int(self.keep.sum()),
            "n_removed": self.n_removed,
            "n_pairs": int(self.pairs.shape[0]),
            "n_duplicate_components": int(sizes.size),
            "largest_component": int(sizes.max(initial=0)),
            "keep_policy": "lowest index in each component",
        }


def duplicate_pairs(I: np.ndarray, D: np.ndarray,
                    threshold: float = DEFAULT_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Unique pairs ``(i, j)``, ``i < j``, with kNN cosine >= threshold (max over both directions),
    sorted by (i, j). Returns (pairs int64 [P, 2], cosine float32 [P])."""
    I, D = check_knn(I, D)
    return _shard_hits(I, D, 0, threshold)


def _unique_max(lo: np.ndarray, hi: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``(lo, hi)`` deduplicated, keeping each pair's max ``w``, sorted by (lo, hi)."""
    order = np.lexsort((-w, hi, lo))  # sort by (lo, hi, -w) and keep the first of each pair
    lo, hi, w = lo[order], hi[order], w[order]
    first = np.ones(lo.size, bool)
    first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    return (np.stack([lo[first], hi[first]], axis=1).astype(np.int64, copy=False).reshape(-1, 2),
            w[first].astype(np.float32))


def _shard_hits(I: np.ndarray, D: np.ndarray, start: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    n, k = I.shape
    rows = np.repeat(np.arange(start, start + n, dtype=np.int64), k).reshape(n, k)
    hit = (I >= 0) & (I != rows) & (D >= threshold)
    a, b, w = rows[hit], I[hit], D[hit]
    return _unique_max(np.minimum(a, b), np.maximum(a, b), w)


def shard_pairs(I: np.ndarray, D: np.ndarray, start: int, n_docs: int,
                threshold: float = DEFAULT_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """The duplicate pairs that one kNN shard lists: rows ``start .. start + len(I)`` of a source
    with ``n_docs`` documents, neighbour ids global. Pairs ``(i, j)``, ``i < j``, cosine >=
    threshold, unique within the shard (max cosine), sorted. A pair listed by two shards comes out
    of both; :func:`merge_pairs` over all shards equals :func:`duplicate_pairs` of the whole
    arrays. Raises InputError for ids outside ``[-1, n_docs)`` or non-finite cosines. O(rows k log)."""
    I, D = np.asarray(I), np.asarray(D)
    if I.ndim != 2 or D.shape != I.shape:
        raise InputError(f"kNN shard at row {start}: I and D must be 2-D arrays of the same shape, "
                         f"got {I.shape} and {D.shape}")
    if I.size and not np.issubdtype(I.dtype, np.integer):
        raise InputError(f"kNN shard at row {start}: I must hold integer ids, got dtype {I.dtype}")
    I = np.ascontiguousarray(I, dtype=np.int64)
    D = np.ascontiguousarray(D, dtype=np.float32)
    if I.size and (I.max() >= n_docs or I.min() < -1):
        raise InputError(f"kNN shard at row {start}: ids must be in [-1, {n_docs}) (the source's documents), "
                         f"got {I.min()}..{I.max()}")
    if not np.isfinite(D[I >= 0]).all():
        raise InputError(f"kNN shard at row {start}: D has NaN/inf where I holds a valid id; fix the kNN stage output")
    return _shard_hits(I, D, int(start), threshold)


def merge_pairs(pairs: np.ndarray, cosine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs from several shards (concatenated) deduplicated with their max cosine, sorted."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    return _unique_max(pairs[:, 0], pairs[:, 1], np.asarray(cosine, np.float32).reshape(-1))


def local_stars(pairs: np.ndarray) -> np.ndarray:
    """Close one shard's pairs with union-find and return star edges ``(root, node)`` (int64
    [M, 2], ``root < node``, sorted by node): every node of a component of >= 2 nodes linked to the
    component's smallest index. The stars have exactly the components of ``pairs`` (each star is
    a spanning tree of its component), with at most one edge per node instead of a chain.
    O(P log P) (node renumbering) + O(P) union-find."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if not pairs.size:
        return np.zeros((0, 2), np.int64)
    nodes, local = np.unique(pairs, return_inverse=True)  # sorted, so local order = global order
    local = local.reshape(-1, 2)
    root = connected_components(nodes.size, local)
    moved = root != np.arange(nodes.size)
    return np.stack([nodes[root[moved]], nodes[moved]], axis=1)


def connected_components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Union-find over ``pairs``; each document's label is the smallest index in its component."""
    from mixweave.retrieval import _kernels

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return _kernels.union_find_min_root(int(n), np.ascontiguousarray(pairs[:, 0]),
                                        np.ascontiguousarray(pairs[:, 1]))


def semantic_dedup(I: np.ndarray, D: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD) -> DedupResult:
    """Near-duplicate components from the kNN lists; keep the lowest-index document of each."""
    if not (-1.0 <= float(threshold) <= 1.0):
        raise ConfigError(f"dedup cosine threshold must be in [-1, 1], got {threshold}")
    I, D = check_knn(I, D)
    pairs, cos = duplicate_pairs(I, D, threshold)
    component = connected_components(I.shape[0], pairs)
    keep = component == np.arange(I.shape[0])
    result = DedupResult(keep, pairs, cos, component, float(threshold))
    log.info("semantic dedup (cosine >= %.3f): %d pairs, removed %d of %d docs",
             threshold, pairs.shape[0], result.n_removed, keep.size)
    return result


def restrict_knn(I: np.ndarray, D: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """kNN lists of the kept documents only, ids renumbered to ``0..keep.sum()-1`` (in the original
    order). Neighbours that were removed become ``-1``/``-inf`` and move to the row's end (the order
    of the remaining neighbours is unchanged). Use after dedup, or to cut out one cluster."""
    I, D = check_knn(I, D)
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (I.shape[0],):
        raise ConfigError(f"keep mask must have length {I.shape[0]}, got {keep.shape}")
    new_id = np.cumsum(keep, dtype=np.int64) - 1
    I, D = I[keep], D[keep]
    valid = I >= 0
    valid[valid] = keep[I[valid]]
    I = np.where(valid, new_id[np.where(valid, I, 0)], -1)
    D = np.where(valid, D, -np.inf).astype(np.float32)
    order = np.argsort(~valid, axis=1, kind="stable")
    return np.take_along_axis(I, order, 1), np.take_along_axis(D, order, 1)
