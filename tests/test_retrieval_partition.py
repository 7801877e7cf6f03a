"""Partitioned traversal: clusters, restricted blocks, in-process equivalence."""

from __future__ import annotations

import numpy as np
import pytest

from mixweave.errors import ConfigError, InputError
from mixweave.retrieval import knn, l2_normalize, traverse
from mixweave.retrieval.dedup import restrict_knn
from mixweave.retrieval.metrics import adjacent_cosine
from mixweave.retrieval.partition import (
    cluster_blocks, coarse_clusters, edge_retention, partitioned_order, plan_partitions, walk_cluster,
)


def clustered(n: int, d: int, n_centres: int, seed: int, cos: float = 0.7) -> np.ndarray:
    """Unit vectors at cosine ``cos`` to one of ``n_centres`` random centres (bench/icp.py's spec-set recipe)."""
    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.standard_normal((n_centres, d)))
    c = centres[rng.integers(0, n_centres, n)]
    noise = rng.standard_normal((n, d)).astype(np.float32)
    noise = l2_normalize(noise - (noise * c).sum(1, keepdims=True) * c)
    return l2_normalize(cos * c + np.sqrt(1 - cos**2) * noise)


@pytest.fixture(scope="module")
def data():
    X = clustered(3000, 64, 60, seed=3)
    I, D = knn(X, 10, method="flat")
    return X, I, D


def test_coarse_clusters_are_seeded_and_cover_every_doc(data):
    X, _, _ = data
    labels, centroids = coarse_clusters(X, 8, seed=1)
    assert labels.shape == (3000,) and labels.dtype == np.int64
    assert centroids.shape == (8, 64)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    assert labels.min() >= 0 and labels.max() < 8
    # nearest centroid by inner product
    assert np.array_equal(labels, np.argmax(X @ centroids.T, axis=1))
    again, _ = coarse_clusters(X, 8, seed=1)
    assert np.array_equal(labels, again)


def test_cluster_blocks_equal_restrict_knn(data):
    _, I, D = data
    labels = np.random.default_rng(0).integers(0, 5, I.shape[0]) * 2  # labels 0,2,..,8; 1,3,.. empty
    blocks = cluster_blocks(I, D, labels)
    assert blocks.offsets.size == 10
    for c in range(9):
        members, ids, weights = blocks.block(c)
        assert np.array_equal(members, np.flatnonzero(labels == c))
        I_c, D_c = restrict_knn(I, D, labels == c)
        assert np.array_equal(ids, I_c) and ids.dtype == np.int32
        assert np.array_equal(weights, D_c)


def test_partitioned_order_is_the_concatenation_of_cluster_walks(data):
    X, I, D = data
    order, info = partitioned_order(X, I, D, n_clusters=8, seed=0)
    assert order.dtype == np.int64 and sorted(order.tolist()) == list(range(3000))
    plan = plan_partitions(X, n_clusters=8, seed=0, I=I, D=D)
    blocks = cluster_blocks(I, D, plan.labels)
    expected = np.concatenate([walk_cluster(*blocks.block(c)) for c in plan.cluster_order])
    assert np.array_equal(order, expected)
    assert info["n_clusters"] == 8 and info["n_docs"] == 3000
    assert info["edge_retention"] == pytest.approx(edge_retention(I, plan.labels), abs=1e-6)
    assert 0.85 < info["edge_retention"] <= 1.0 and info["edge_retention"] >= info["edge_retention_kmeans"]
    # deterministic for a seed
    assert np.array_equal(order, partitioned_order(X, I, D, n_clusters=8, seed=0)[0])


def test_partitioned_quality_close_to_global(data):
    """Loose sanity check of the <= 5% target (the bench measures it at N=100k, d=768)."""
    X, I, D = data
    glob = adjacent_cosine(X, traverse(I, D)).mean()
    for n_clusters in (4, 16, 64):
        part = adjacent_cosine(X, partitioned_order(X, I, D, n_clusters=n_clusters, seed=0)[0]).mean()
        assert part >= 0.95 * glob, (n_clusters, part, glob)
    rand = adjacent_cosine(X, np.random.default_rng(0).permutation(X.shape[0])).mean()
    assert glob > rand + 0.2


def test_one_cluster_is_the_global_traversal(data):
    X, I, D = data
    order, info = partitioned_order(X, I, D, n_clusters=1, seed=0)
    assert info["n_clusters"] == 1
    assert np.array_equal(order, traverse(I, D))


def test_more_clusters_than_docs_and_bad_input():
    X = clustered(12, 8, 3, seed=0)
    I, D = knn(X, 3, method="flat")
    order, info = partitioned_order(X, I, D, n_clusters=50, seed=0)
    assert sorted(order.tolist()) == list(range(12)) and info["n_clusters"] <= 12
    with pytest.raises(ConfigError):
        partitioned_order(X, I, D, n_clusters=0, seed=0)
    with pytest.raises(InputError):
        partitioned_order(2 * X, I, D, n_clusters=2, seed=0)  # not unit-norm
    with pytest.raises(InputError):
        partitioned_order(X[:10], I, D, n_clusters=2, seed=0)
    with pytest.raises(InputError):
        cluster_blocks(I, D, np.zeros(5, np.int64))
    empty, _ = partitioned_order(np.zeros((0, 8), np.float32), np.zeros((0, 3), np.int64),
                                 np.zeros((0, 3), np.float32), n_clusters=2, seed=0)
    assert empty.size == 0


def test_refinement_keeps_topics_together(data):
    """Coarse k-means on many topics cuts kNN edges; the kNN vote puts them back."""
    from mixweave.retrieval.partition import refine_labels

    X, I, D = data
    labels, _ = coarse_clusters(X, 4, seed=0)
    refined = refine_labels(I, D, labels, rounds=2)
    assert edge_retention(I, refined) > edge_retention(I, labels)
    assert np.array_equal(refine_labels(I, D, labels, rounds=0), labels)
    # a document moves to the cluster holding most of its neighbours' cosine mass; ties stay
    I2 = np.array([[1, 2, -1], [0, 2, -1], [0, 1, -1], [0, 1, 2]])
    D2 = np.array([[0.9, 0.8, -np.inf], [0.9, 0.1, -np.inf], [0.8, 0.1, -np.inf], [0.5, 0.5, 0.1]], np.float32)
    assert refine_labels(I2, D2, np.array([0, 0, 1, 1]), rounds=1).tolist() == [0, 0, 0, 0]
    assert refine_labels(I2, D2, np.array([1, 0, 0, 1]), rounds=1).tolist() == [0, 1, 1, 0]  # synchronous
    I3 = np.array([[1, 2], [-1, -1], [-1, -1]])
    D3 = np.array([[0.5, 0.5], [-np.inf, -np.inf], [-np.inf, -np.inf]], np.float32)
    assert refine_labels(I3, D3, np.array([2, 1, 0]), rounds=1).tolist() == [0, 1, 0]  # tie: smaller label
    assert refine_labels(I3, D3, np.array([1, 1, 0]), rounds=1).tolist() == [1, 1, 0]  # tie: stays
    with pytest.raises(ConfigError):
        refine_labels(I2, D2, np.array([0, 0, 1, 1]), rounds=-1)


def test_vote_labels_equals_the_refinement_kernel():
    """The list-wise vote (the Spark job's refinement) against the in-process kernel, ties included."""
    from mixweave.retrieval import _kernels
    from mixweave.retrieval.partition import vote_labels

    rng = np.random.default_rng(0)
    for _ in range(200):
        n, k, n_labels = int(rng.integers(1, 60)), int(rng.integers(1, 6)), int(rng.integers(1, 6))
        I = rng.integers(-1, n, (n, k))
        D = (rng.integers(-2, 4, (n, k)) / 4).astype(np.float32)  # many equal sums, some negative
        D[I < 0] = -np.inf
        labels = rng.integers(0, n_labels, n)
        valid = (I >= 0) & (I != np.arange(n)[:, None])
        offsets = np.r_[0, np.cumsum(valid.sum(1))]
        assert np.array_equal(vote_labels(offsets, labels[I[valid]], D[valid], labels),
                              _kernels.refine_labels_round(I, D, labels, n_labels))


def test_assignment_and_centroid_sums_do_not_depend_on_the_split(data):
    """Labels are a function of the row (any block size), integer centroid sums add up exactly."""
    from mixweave.retrieval.partition import (
        assign_nearest, centroid_sums, cluster_centroids, kmeans_sample, train_centroids,
    )

    X, _, _ = data
    sample = kmeans_sample(X.shape[0], 6, seed=4)
    assert sample.size == 6 * 128 and np.array_equal(sample, kmeans_sample(X.shape[0], 6, seed=4))
    centroids = train_centroids(X[sample], 6, seed=4)
    tied = np.vstack([centroids, centroids[2:3]])  # an exact tie: the lower index wins
    labels = assign_nearest(X, tied)
    assert np.array_equal(labels, assign_nearest(X, tied, block=7))
    assert np.array_equal(labels, np.concatenate([assign_nearest(X[i:i + 333], tied) for i in range(0, 3000, 333)]))
    assert not (labels == 6).any() and (labels == 2).any()
    assert (np.take_along_axis(X @ tied.T, labels[:, None], 1)[:, 0] >= (X @ tied.T).max(1) - 1e-5).all()
    whole = centroid_sums(X, labels, 7)
    assert np.array_equal(whole, centroid_sums(X[:1000], labels[:1000], 7) + centroid_sums(X[1000:], labels[1000:], 7))
    ref = np.stack([X[labels == c].mean(0) if (labels == c).any() else np.zeros(64) for c in range(7)])
    ref /= np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-12)
    np.testing.assert_allclose(cluster_centroids(X, labels, 7), ref, atol=1e-6)
