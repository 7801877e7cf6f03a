"""Algorithm 1 traversal: numba implementation vs a plain networkx reference of the same rules."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

import mixweave.retrieval as retrieval
from mixweave.errors import InputError
from mixweave.retrieval.dedup import restrict_knn
from mixweave.retrieval.traverse import build_graph, order_clusters, traverse, traverse_clustered


def reference_traverse(I: np.ndarray, D: np.ndarray) -> list[int]:
    """Brute force, straight from the paper's text: symmetric graph (max weight on duplicates),
    static degree, start/jump at min (degree, id), move to max (weight, -id) unvisited neighbour."""
    n = I.shape[0]
    G = nx.Graph()
    G.add_nodes_from(range(n))
    for i in range(n):
        for j in range(I.shape[1]):
            v = int(I[i, j])
            if v < 0 or v == i:
                continue
            w = float(D[i, j])
            if G.has_edge(i, v):
                G[i][v]["weight"] = max(G[i][v]["weight"], w)
            else:
                G.add_edge(i, v, weight=w)
    degree = dict(G.degree())
    unvisited = set(range(n))
    path: list[int] = []
    while unvisited:
        d = min(unvisited, key=lambda u: (degree[u], u))
        path.append(d)
        unvisited.remove(d)
        while True:
            cands = [u for u in G[d] if u in unvisited]
            if not cands:
                break
            d = max(cands, key=lambda u: (G[d][u]["weight"], -u))
            path.append(d)
            unvisited.remove(d)
    return path


def random_knn(rng: np.random.Generator, n: int, k: int, *, tie_values: bool) -> tuple[np.ndarray, np.ndarray]:
    """Messy kNN lists: random ids, some -1 padding, self matches, repeated ids, tied weights."""
    I = rng.integers(0, n, size=(n, k))
    I[rng.random((n, k)) < 0.15] = -1
    self_rows = rng.random(n) < 0.2
    I[self_rows, 0] = np.flatnonzero(self_rows)
    if n > 3:
        I[rng.integers(0, n, size=max(1, n // 10))] = -1  # whole rows empty -> isolated unless listed
    if tie_values:
        D = rng.choice(np.array([0.1, 0.5, 0.5, 0.9], np.float32), size=(n, k))
    else:
        D = rng.random((n, k)).astype(np.float32)
    return I, D


@pytest.mark.parametrize("seed", range(60))
def test_traverse_matches_reference_on_random_graphs(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    k = int(rng.integers(1, 7))
    I, D = random_knn(rng, n, k, tie_values=seed % 2 == 0)
    order = traverse(I, D)
    assert order.dtype == np.int64
    assert sorted(order.tolist()) == list(range(n))
    assert order.tolist() == reference_traverse(I, D)


def test_traverse_matches_reference_on_real_knn_of_clustered_vectors():
    from mixweave.retrieval.knn import knn, l2_normalize

    rng = np.random.default_rng(7)
    centres = rng.standard_normal((8, 16))
    X = l2_normalize(centres[rng.integers(0, 8, 400)] + 0.6 * rng.standard_normal((400, 16)))
    I, D = knn(X, 6, method="flat")
    assert traverse(I, D).tolist() == reference_traverse(I, D)


def test_traverse_is_exported_and_handles_edge_cases():
    assert retrieval.traverse is traverse
    # no edges at all: isolated docs in id order (all degree 0)
    I = np.full((4, 2), -1)
    assert traverse(I, np.zeros((4, 2), np.float32)).tolist() == [0, 1, 2, 3]
    # only self matches
    I = np.arange(3)[:, None]
    assert traverse(I, np.ones((3, 1), np.float32)).tolist() == [0, 1, 2]
    # k = 0 and N = 1
    assert traverse(np.zeros((2, 0), np.int64), np.zeros((2, 0), np.float32)).tolist() == [0, 1]
    assert traverse(np.array([[0]]), np.array([[1.0]], np.float32)).tolist() == [0]


def test_traverse_follows_highest_weight_and_jumps_to_min_degree():
    # path 0-1-2-3 with a heavy shortcut 1-3; doc 4 attached only to 3
    I = np.array([[1, -1], [0, 3], [1, 3], [2, 4], [3, -1]])
    D = np.array([[0.5, 0], [0.5, 0.9], [0.4, 0.3], [0.3, 0.2], [0.2, 0]], np.float32)
    # degrees: 0:1, 1:3 (0,2,3), 2:2, 3:3 (1,2,4), 4:1 -> start at 0
    # 0 -> 1 -> 3 (0.9) -> 2 (0.3 beats 0.2) -> stuck (1 visited) -> jump to 4
    assert traverse(I, D).tolist() == [0, 1, 3, 2, 4]


def test_graph_is_symmetric_with_max_weight():
    I = np.array([[1, 2], [0, 0], [-1, 0]])
    D = np.array([[0.2, 0.7], [0.6, 0.1], [0.0, 0.3]], np.float32)
    g = build_graph(I, D)
    assert g.degree.tolist() == [2, 1, 1]
    row0 = dict(zip(g.indices[g.indptr[0]:g.indptr[1]].tolist(), g.weights[g.indptr[0]:g.indptr[1]].tolist()))
    assert row0 == {1: pytest.approx(0.6), 2: pytest.approx(0.7)}
    pairs = [(u, int(v)) for u in range(g.n) for v in g.indices[g.indptr[u]:g.indptr[u + 1]]]
    assert sorted(pairs) == [(0, 1), (0, 2), (1, 0), (2, 0)]  # every adjacency in both directions


def test_traverse_rejects_bad_input():
    with pytest.raises(InputError):
        traverse(np.array([[5]]), np.array([[0.1]], np.float32))  # id out of range
    with pytest.raises(InputError):
        traverse(np.array([[1], [0]]), np.array([[np.nan], [0.1]], np.float32))
    with pytest.raises(InputError):
        traverse(np.array([[1], [0]]), np.zeros((2, 2), np.float32))


@pytest.mark.parametrize("seed", range(8))
def test_traverse_clustered_equals_per_cluster_traversals(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(5, 80))
    I, D = random_knn(rng, n, 5, tie_values=True)
    labels = rng.integers(0, 4, n) * 10
    cluster_order = rng.permutation(np.unique(labels))
    got = traverse_clustered(I, D, labels, cluster_order)
    expected = []
    for c in cluster_order:
        members = np.flatnonzero(labels == c)
        Ic, Dc = restrict_knn(I, D, labels == c)
        expected.extend(members[traverse(Ic, Dc)].tolist())
    assert got.tolist() == expected


def test_order_clusters_is_a_permutation():
    rng = np.random.default_rng(0)
    order = order_clusters(rng.standard_normal((12, 8)), k=3)
    assert sorted(order.tolist()) == list(range(12))
    with pytest.raises(InputError):
        traverse_clustered(np.array([[1], [0]]), np.ones((2, 1), np.float32), np.array([0, 1]), [0])


@pytest.mark.parametrize("seed", range(4))
def test_traverse_kernels_match_the_reference_on_larger_graphs(seed):
    """The array-native kernels (out-rows read in place + transposed in-lists) walk exactly like the
    reference above, and their degrees equal the merged symmetric CSR's, with either id width."""
    from mixweave.retrieval import _kernels
    from mixweave.retrieval.knn import check_knn

    rng = np.random.default_rng(500 + seed)
    I, D = check_knn(*random_knn(rng, 3000, 12, tie_values=seed % 2 == 0))
    g = build_graph(I, D)
    expected = np.array(reference_traverse(I, D), np.int64)
    assert np.array_equal(traverse(I, D), expected)
    for proto in (np.empty(0, np.int32), np.empty(0, np.int64)):
        ptr, src, wt = _kernels.knn_in_lists(I, D, proto)
        assert src.dtype == proto.dtype
        assert np.array_equal(_kernels.knn_degrees(I, ptr, src), g.degree)
        walk = _kernels.knn_walk(I, D, ptr, src, wt, _kernels.order_by_value(g.degree))
        assert np.array_equal(walk, expected)
