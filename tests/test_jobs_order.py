"""Spark partitioned ordering equals the in-process partitioned traversal, whatever the tasks."""

from __future__ import annotations

import numpy as np
import pytest

from mixweave.retrieval import knn, traverse
from mixweave.retrieval.metrics import adjacent_cosine
from mixweave.retrieval.partition import partitioned_order

from test_retrieval_partition import clustered

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def data():
    X = clustered(2000, 64, 40, seed=11)
    I, D = knn(X, 8, method="flat")
    return X, I, D


def test_spark_partitioned_order_equals_in_process(spark, data, tmp_path):
    from mixweave.jobs.order import run_partitioned_order

    X, I, D = data
    expected, info_local = partitioned_order(X, I, D, n_clusters=12, seed=5, k_centroids=4)
    for n_tasks in (1, 5):
        order, info = run_partitioned_order(spark, X, I, D, n_clusters=12, seed=5, k_centroids=4,
                                            n_tasks=n_tasks, work_dir=tmp_path)
        assert order.dtype == np.int64
        assert np.array_equal(order, expected), n_tasks
        assert info["spark_tasks"] == n_tasks
        assert info["n_clusters"] == info_local["n_clusters"]
        assert info["edge_retention"] == info_local["edge_retention"]
    assert list(tmp_path.iterdir()) == []  # staging folder removed
    # quality: loose sanity bound against the global walk (the bench measures the real figure)
    glob = adjacent_cosine(X, traverse(I, D)).mean()
    assert adjacent_cosine(X, order).mean() >= 0.9 * glob


def test_spark_partitioned_order_default_tasks_and_tiny_input(spark):
    from mixweave.jobs.order import run_partitioned_order

    X = clustered(30, 16, 3, seed=0)
    I, D = knn(X, 4, method="flat")
    I[0, :] = -1  # a document with no neighbours of its own
    D[0, :] = -np.inf
    order, info = run_partitioned_order(spark, X, I, D, n_clusters=3, seed=0)
    assert np.array_equal(order, partitioned_order(X, I, D, n_clusters=3, seed=0)[0])
    assert sorted(order.tolist()) == list(range(30))
    empty, info = run_partitioned_order(spark, np.zeros((0, 16), np.float32), np.zeros((0, 4), np.int64),
                                        np.zeros((0, 4), np.float32), n_clusters=3, seed=0)
    assert empty.size == 0 and info["n_docs"] == 0
