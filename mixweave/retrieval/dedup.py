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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from mixweave.errors import ConfigError
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
    n, k = I.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k).reshape(n, k)
    hit = (I >= 0) & (I != rows) & (D >= threshold)
    a, b, w = rows[hit], I[hit], D[hit]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    # sort by (lo, hi, -w) and keep the first of each pair: the max cosine
    order = np.lexsort((-w, hi, lo))
    lo, hi, w = lo[order], hi[order], w[order]
    first = np.ones(lo.size, bool)
    first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    return np.stack([lo[first], hi[first]], axis=1), w[first].astype(np.float32)


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
