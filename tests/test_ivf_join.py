"""The offline-IVF join cores against brute force on tiny clustered data."""

from __future__ import annotations

import numpy as np
import pytest

from mixweave.errors import ConfigError
from mixweave.retrieval import knn
from mixweave.retrieval.ivf_join import (
    TRAIN_MAX_PER_LIST, assign_lists, block_lists, exact_join_knn, ivf_join_knn, merge_partials, resolve_nlist,
    resolve_nprobe, search_list, train_centroids, train_sample,
)

from test_retrieval_partition import clustered


def brute_topk(X: np.ndarray, q: int, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of query q among candidates (float64 cosines rounded once), higher then lower id."""
    candidates = candidates[candidates != q]
    d = (X[candidates].astype(np.float64) @ X[q].astype(np.float64)).astype(np.float32)
    order = np.lexsort((candidates, -d))[:k]
    I = np.full(k, -1, np.int64)
    D = np.full(k, -np.inf, np.float32)
    I[:order.size], D[:order.size] = candidates[order], d[order]
    return I, D


@pytest.fixture(scope="module")
def X():
    return clustered(500, 16, 12, seed=4, cos=0.6)


def test_search_list_equals_brute_force_with_self_and_padding(X):
    q_ids = np.array([3, 7, 40, 41, 42], np.int64)
    m_ids = np.array([7, 10, 40, 41, 99, 120], np.int64)
    I, D = search_list(q_ids, X[q_ids], m_ids, X[m_ids], 8, query_block=2)
    for row, q in enumerate(q_ids):
        eI, eD = brute_topk(X, q, m_ids, 8)
        assert np.array_equal(I[row], eI) and np.array_equal(D[row], eD)
    assert (I[1] == -1).sum() == 3  # 7 sees the 5 others only
    assert not (I == q_ids[:, None]).any()


def test_ivf_join_equals_brute_force_restricted_to_probed_lists(X):
    k, nlist, nprobe, seed = 6, 10, 3, 2
    I, D = ivf_join_knn(X, k, nlist=nlist, nprobe=nprobe, seed=seed)
    centroids = train_centroids(X[train_sample(len(X), nlist, seed=seed)], nlist, seed=seed)
    probes = assign_lists(X, centroids, nprobe)
    home = probes[:, 0]
    for q in range(len(X)):
        eI, eD = brute_topk(X, q, np.flatnonzero(np.isin(home, probes[q])), k)
        assert np.array_equal(I[q], eI), q
        assert np.array_equal(D[q], eD), q
    exact, _ = knn(X, k, method="flat")
    from mixweave.retrieval.knn import recall_at_k

    assert 0.5 < recall_at_k(I, exact) < 1.0  # approximate, but a real search


def test_nprobe_nlist_and_block_join_are_exact(X):
    I_flat, D_flat = knn(X, 7, method="flat")
    I_all, D_all = ivf_join_knn(X, 7, nlist=8, nprobe=8, seed=1)
    I_blk, D_blk = exact_join_knn(X, 7, list_rows=64)
    assert np.array_equal(I_all, I_blk) and np.array_equal(D_all, D_blk)  # same kernel, same bytes
    assert np.array_equal(I_blk, I_flat)
    assert np.abs(D_blk - D_flat).max() <= 1e-6


def test_ties_go_to_the_lower_global_index():
    base = clustered(20, 8, 2, seed=0)
    X = np.concatenate([base, base[:5], base[:5]])  # rows 20..24 and 25..29 duplicate 0..4
    I, D = exact_join_knn(X, 3, list_rows=7)
    assert I[0].tolist() == [20, 25, I[0, 2]] and D[0, 0] == D[0, 1]
    assert I[25, :2].tolist() == [0, 20]


def test_merge_partials_is_order_independent_and_counts_a_neighbour_once():
    rng = np.random.default_rng(0)
    q = rng.integers(0, 6, 40)
    I = rng.integers(-1, 30, (40, 4))
    # one score per (query, id) pair, as real partials have; only ten values: many ties
    D = np.where(I >= 0, ((I * 7 + q[:, None] * 3) % 10) / 10, -np.inf).astype(np.float32)
    u, I1, D1 = merge_partials(q, I, D, 5)
    perm = rng.permutation(40)
    u2, I2, D2 = merge_partials(q[perm], I[perm], D[perm], 5)
    assert np.array_equal(u, u2) and np.array_equal(I1, I2) and np.array_equal(D1, D2)
    for row, query in enumerate(u):
        ids = np.unique(I[q == query][I[q == query] >= 0])
        scores = ((ids * 7 + query * 3) % 10) / 10
        expected = ids[np.lexsort((ids, -scores))][:5]
        assert I1[row, :expected.size].tolist() == expected.tolist()
        assert (I1[row, expected.size:] == -1).all()


def test_assign_lists_ranks_by_score_with_ties_to_the_lower_list(X):
    centroids = train_centroids(X[:200], 6, seed=0)
    centroids = np.concatenate([centroids, centroids[:1]])  # list 6 duplicates list 0
    probes = assign_lists(X, centroids, 3)
    S = X.astype(np.float64) @ centroids.astype(np.float64).T
    expected = np.argsort(-S, axis=1, kind="stable")[:, :3]
    assert np.array_equal(probes, expected)
    assert not (probes[:, 0] == 6).any()  # 0 wins the tie as home
    blocks = block_lists(np.array([0, 9, 19]), 8, 20)
    assert blocks.tolist() == [[0, 1, 2], [1, 0, 2], [2, 0, 1]]


def test_train_sample_is_bounded_and_seeded_and_settings_resolve():
    s = train_sample(10**6, 16, seed=3, train_size=10**6)
    assert s.size == TRAIN_MAX_PER_LIST * 16 and np.all(np.diff(s) > 0)
    assert np.array_equal(s, train_sample(10**6, 16, seed=3, train_size=10**6))
    assert train_sample(50, 16, seed=0).tolist() == list(range(50))
    assert resolve_nlist(30, 0) == 1 and resolve_nlist(10**5, 0) == 1024 and resolve_nlist(10, 64) == 10
    assert resolve_nprobe(8, 0) == 8 and resolve_nprobe(1024, 5) == 5
    with pytest.raises(ConfigError):
        resolve_nprobe(8, -1)
    with pytest.raises(ConfigError):
        train_centroids(np.eye(4, dtype=np.float32), 5)
