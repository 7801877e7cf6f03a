"""Order metrics on a tiny hand-made case and an end-to-end clustered run."""

from __future__ import annotations

import numpy as np
import pytest

from mixweave.errors import InputError
from mixweave.retrieval import knn, l2_normalize, pack_windows, semantic_dedup, traverse
from mixweave.retrieval.dedup import restrict_knn
from mixweave.retrieval.metrics import adjacent_cosine, check_order, order_metrics, segment_lengths


def test_adjacent_cosine_and_segments():
    X = l2_normalize(np.array([[1, 0], [1, 1], [0, 1], [-1, 0]], np.float32))
    np.testing.assert_allclose(adjacent_cosine(X, np.array([0, 1, 2, 3])), [0.7071, 0.7071, 0.0], atol=1e-4)
    assert segment_lengths(np.array([True, False, True, True])).tolist() == [2, 3]
    with pytest.raises(InputError):
        check_order([0, 0, 1], 3)


def test_hand_made_path_objective_and_jump_rate():
    X = l2_normalize(np.eye(4, dtype=np.float32) + 0.1)
    I = np.array([[1], [0], [3], [2]])
    D = np.array([[0.8], [0.8], [0.6], [0.6]], np.float32)
    m = order_metrics(X, [0, 1, 2, 3], I, D)
    assert m["jump_rate"] == pytest.approx(1 / 3)
    assert m["path_objective"] == pytest.approx((0.8 + 0.6) / 3)
    assert m["n_segments"] == 2 and m["segment_length_max"] == 2


def test_end_to_end_icp_beats_random_order():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((30, 32))
    X = l2_normalize(centres[rng.integers(0, 30, 1200)] + 0.5 * rng.standard_normal((1200, 32)))
    I, D = knn(X, 10, method="flat")
    keep = semantic_dedup(I, D).keep
    Ik, Dk = restrict_knn(I, D, keep)
    Xk = X[keep]
    order = traverse(Ik, Dk)
    lengths = rng.integers(50, 400, Xk.shape[0])
    docs = [np.full(n, 7) for n in lengths]
    packed = pack_windows(docs, order, seq_len=512, eos_id=0, seed=1)
    m = order_metrics(Xk, order, Ik, Dk, packed=packed)
    assert m["mean_adjacent_cosine"] > 0.5 > abs(m["random_order_mean_adjacent_cosine"]) + 0.4
    assert m["jump_rate"] < 0.2 < 0.9 < m["random_order_jump_rate"]
    assert 0.8 < m["ratio_to_ceiling"] <= 1.0
    assert m["share_windows_related"] > 0.7
    assert m["window_pairwise_cosine_mean"] > 0.4
    # shuffling windows breaks the relation between adjacent windows
    assert m["adjacent_window_centroid_cosine_shuffled"] < m["adjacent_window_centroid_cosine_stream"]
    with pytest.raises(InputError):
        order_metrics(Xk, order[:-1], Ik, Dk)


def test_random_pair_cosines_from_the_gram_matrix_equal_the_gathered_pairs(monkeypatch):
    """Small inputs read the pairs from X @ X.T; the row gather (the large-input path) is the reference."""
    import mixweave.retrieval.metrics as metrics

    rng = np.random.default_rng(0)
    for n in (2, 31, 700):
        X = rng.standard_normal((n, 48)).astype(np.float32)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        fast = metrics.random_pair_cosines(X, n_pairs=5000, seed=n)
        monkeypatch.setattr(metrics, "GRAM_MAX_ROWS", 0)
        gathered = metrics.random_pair_cosines(X, n_pairs=5000, seed=n)
        monkeypatch.undo()
        assert fast.dtype == gathered.dtype == np.float32 and fast.shape == (5000,)
        np.testing.assert_allclose(fast, gathered, atol=1e-6, rtol=0)
