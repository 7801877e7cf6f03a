"""Semantic dedup against a brute-force reference (pairs, networkx components, keep-lowest)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from mixweave.errors import ConfigError
from mixweave.retrieval.dedup import connected_components, duplicate_pairs, restrict_knn, semantic_dedup
from mixweave.retrieval.knn import knn, l2_normalize


def reference_dedup(I, D, threshold):
    n = I.shape[0]
    best: dict[tuple[int, int], float] = {}
    for i in range(n):
        for j in range(I.shape[1]):
            v = int(I[i, j])
            if v < 0 or v == i or D[i, j] < threshold:
                continue
            key = (min(i, v), max(i, v))
            best[key] = max(best.get(key, -2.0), float(D[i, j]))
    G = nx.Graph()
    G.add_nodes_from(range(n))
    G.add_edges_from(best)
    keep = np.zeros(n, bool)
    component = np.empty(n, np.int64)
    for comp in nx.connected_components(G):
        root = min(comp)
        keep[root] = True
        component[list(comp)] = root
    return sorted(best.items()), keep, component


@pytest.mark.parametrize("seed", range(30))
def test_dedup_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(2, 80)), int(rng.integers(1, 6))
    I = rng.integers(-1, n, size=(n, k))
    D = rng.choice(np.array([0.5, 0.94, 0.95, 0.99], np.float32), size=(n, k))
    res = semantic_dedup(I, D, threshold=0.95)
    pairs, keep, component = reference_dedup(I, D, 0.95)
    assert [tuple(p) for p in res.pairs.tolist()] == [p for p, _ in pairs]
    np.testing.assert_allclose(res.pair_cosine, [c for _, c in pairs])
    assert np.array_equal(res.keep, keep)
    assert np.array_equal(res.component, component)
    assert res.summary()["n_removed"] == int((~keep).sum())


def test_dedup_on_real_knn_with_planted_copies():
    rng = np.random.default_rng(0)
    base = l2_normalize(rng.standard_normal((200, 32)))
    copies = l2_normalize(base[:20] + 0.01 * rng.standard_normal((20, 32)))  # near-verbatim copies
    X = np.concatenate([base, copies])
    I, D = knn(X, 5, method="flat")
    res = semantic_dedup(I, D)
    assert res.keep[:200].all() and not res.keep[200:].any()
    assert np.array_equal(res.component[200:], np.arange(20))
    assert res.component_sizes().tolist() == [2] * 20
    s = res.summary()
    assert (s["n_kept"], s["n_removed"], s["n_pairs"], s["threshold"]) == (200, 20, 20, 0.95)


def test_union_find_chains_and_min_root():
    comp = connected_components(6, np.array([[4, 5], [3, 4], [1, 3]]))
    assert comp.tolist() == [0, 1, 2, 1, 1, 1]
    assert connected_components(3, np.zeros((0, 2), np.int64)).tolist() == [0, 1, 2]


def test_duplicate_pairs_keep_max_over_directions():
    I = np.array([[1], [0]])
    D = np.array([[0.96], [0.97]], np.float32)
    pairs, cos = duplicate_pairs(I, D, 0.95)
    assert pairs.tolist() == [[0, 1]] and cos.tolist() == [pytest.approx(0.97)]


def test_restrict_knn_renumbers_and_pads():
    I = np.array([[1, 2, 3], [0, 3, -1], [3, 0, 1], [2, 1, 0]])
    D = np.array([[0.9, 0.8, 0.7], [0.9, 0.5, 0], [0.6, 0.8, 0.2], [0.6, 0.5, 0.7]], np.float32)
    Ik, Dk = restrict_knn(I, D, np.array([True, False, True, True]))
    assert Ik.tolist() == [[1, 2, -1], [2, 0, -1], [1, 0, -1]]
    assert Dk[0].tolist()[:2] == pytest.approx([0.8, 0.7]) and np.isneginf(Dk[:, 2]).all()


def test_bad_threshold():
    with pytest.raises(ConfigError):
        semantic_dedup(np.array([[1], [0]]), np.ones((2, 1), np.float32), threshold=1.5)


# ------------------------------------------------------------------- the per-shard cores
def _random_knn(seed, n=None, k=None):
    rng = np.random.default_rng(seed)
    n, k = n or int(rng.integers(2, 80)), k or int(rng.integers(1, 6))
    I = rng.integers(-1, n, size=(n, k))
    D = rng.choice(np.array([0.5, 0.94, 0.95, 0.99], np.float32), size=(n, k))  # 0.95: exactly at the threshold
    return I, D


@pytest.mark.parametrize("seed", range(12))
def test_shard_pairs_merged_over_shards_equal_duplicate_pairs(seed):
    from mixweave.data.artifacts import shard_bounds
    from mixweave.retrieval.dedup import merge_pairs, shard_pairs

    I, D = _random_knn(seed)
    n = I.shape[0]
    rows = int(np.random.default_rng(seed).integers(1, n + 1))
    parts = [shard_pairs(I[a:b], D[a:b], a, n, 0.95) for a, b in shard_bounds(n, rows)]
    for (a, b), (p, c) in zip(shard_bounds(n, rows), parts):  # each shard's pairs touch its rows
        assert np.all((p[:, 0] >= a) & (p[:, 0] < b) | (p[:, 1] >= a) & (p[:, 1] < b))
        assert np.array_equal(p, np.unique(p, axis=0)) and (p[:, 0] < p[:, 1]).all()
    pairs, cos = merge_pairs(np.concatenate([p for p, _ in parts]), np.concatenate([c for _, c in parts]))
    ref_pairs, ref_cos = duplicate_pairs(I, D, 0.95)
    assert np.array_equal(pairs, ref_pairs) and np.array_equal(cos, ref_cos)


@pytest.mark.parametrize("seed", range(12))
def test_local_stars_have_the_components_of_the_pairs(seed):
    from mixweave.retrieval.dedup import local_stars

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    pairs = np.sort(rng.integers(0, n, size=(int(rng.integers(0, 2 * n)), 2)), axis=1) + 1000  # global ids
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    stars = local_stars(pairs)
    G = nx.Graph()
    G.add_edges_from(map(tuple, pairs.tolist()))
    expected = sorted((min(c), v) for c in nx.connected_components(G) for v in c if v != min(c))
    assert sorted(map(tuple, stars.tolist())) == expected  # one edge per non-root node, to its component's min
    assert local_stars(np.zeros((0, 2), np.int64)).shape == (0, 2)


def test_shard_pairs_refuse_bad_shards():
    from mixweave.errors import InputError
    from mixweave.retrieval.dedup import shard_pairs

    I, D = np.array([[1], [5]]), np.ones((2, 1), np.float32)
    with pytest.raises(InputError, match=r"ids must be in \[-1, 5\)"):
        shard_pairs(I, D, 10, 5)
    with pytest.raises(InputError, match="same shape"):
        shard_pairs(I, D[:1], 0, 5)
    with pytest.raises(InputError, match="NaN"):
        shard_pairs(np.array([[1]]), np.array([[np.nan]], np.float32), 0, 5)
