"""kNN backends against brute-force numpy, IVF recall, torch blocked top-k vs faiss flat."""

from __future__ import annotations

import numpy as np
import pytest

from mixweave.errors import ConfigError, InputError
from mixweave.retrieval.knn import (
    build_index, check_embeddings, drop_self_matches, knn, knn_torch, l2_normalize, merge_topk, recall_at_k,
    search_index,
)


def brute_force(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    S = X.astype(np.float64) @ X.T.astype(np.float64)
    np.fill_diagonal(S, -np.inf)
    I = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return I, np.take_along_axis(S, I, 1)


def clustered(n: int, d: int = 32, centres: int = 20, noise: float = 0.3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((centres, d))
    return l2_normalize(C[rng.integers(0, centres, n)] + noise * rng.standard_normal((n, d)))


@pytest.fixture(scope="module")
def gaussian():
    return l2_normalize(np.random.default_rng(1).standard_normal((1500, 24)))


def test_flat_equals_brute_force(gaussian):
    I, D = knn(gaussian, 10, method="flat")
    Ib, Db = brute_force(gaussian, 10)
    assert I.dtype == np.int64 and D.dtype == np.float32 and I.shape == (1500, 10)
    assert np.array_equal(I, Ib)
    np.testing.assert_allclose(D, Db, atol=1e-5)
    assert not (I == np.arange(1500)[:, None]).any()


def test_auto_uses_flat_for_small_n(gaussian):
    I, _ = knn(gaussian, 5)
    assert np.array_equal(I, brute_force(gaussian, 5)[0])


def test_sharded_index_and_query_blocks_equal_single_index(gaussian):
    I1, D1 = knn(gaussian, 8, method="flat")
    I2, D2 = knn(gaussian, 8, method="flat", index_shard_size=400, query_block=333)
    assert np.array_equal(I1, I2)
    np.testing.assert_allclose(D1, D2, atol=1e-6)


def test_torch_blocked_topk_equals_faiss_flat(gaussian):
    I1, D1 = knn(gaussian, 10, method="flat")
    I2, D2 = knn_torch(gaussian, 10, device="cpu", query_block=256, base_block=500)
    assert np.array_equal(I1, I2)
    np.testing.assert_allclose(D1, D2, atol=1e-5)


def test_small_n_is_padded_with_minus_one():
    X = l2_normalize(np.random.default_rng(0).standard_normal((3, 4)))
    for method in ("flat", "torch"):
        I, D = knn(X, 5, method=method)
        assert I.shape == (3, 5)
        assert (I[:, 2:] == -1).all() and np.isneginf(D[:, 2:]).all()
        assert sorted(I[0, :2].tolist()) == [1, 2]
    I, D = knn(X[:1], 3, method="flat")
    assert (I == -1).all()


def test_exact_duplicates_never_list_themselves():
    X = l2_normalize(np.repeat(np.random.default_rng(0).standard_normal((5, 8)), 4, axis=0))
    I, D = knn(X, 5, method="flat")
    assert not (I == np.arange(20)[:, None]).any()
    np.testing.assert_allclose(D[:, :3], 1.0, atol=1e-5)  # the 3 other copies come first


def test_ivf_recall_on_clustered_data_and_determinism():
    X = clustered(6000)
    exact, exact_D = knn(X, 10, method="flat")
    I1, D1 = knn(X, 10, method="ivf", seed=3)
    I2, D2 = knn(X, 10, method="ivf", seed=3)
    assert np.array_equal(I1, I2) and np.array_equal(D1, D2)
    recall = recall_at_k(I1, exact)
    assert recall > 0.9, recall
    assert not (I1 == np.arange(6000)[:, None]).any()
    # scanning every list makes IVF exact (up to float rounding among near-ties)
    I3, D3 = knn(X, 10, method="ivf", nlist=32, nprobe=32)
    assert recall_at_k(I3, exact) > 0.9999
    np.testing.assert_allclose(D3, exact_D, atol=1e-5)


def test_ivfpq_and_hnsw_run_and_report_recall():
    X = clustered(3000, d=32, seed=4)
    exact, _ = knn(X, 10, method="flat")
    assert recall_at_k(knn(X, 10, method="hnsw")[0], exact) > 0.8
    I, D = knn(X, 10, method="ivfpq", pq_m=8, nlist=16, train_size=3000)
    assert I.shape == (3000, 10) and recall_at_k(I, exact) > 0.2


def test_build_on_a_sample_then_search_and_drop_self_matches():
    X = clustered(3000, seed=5)
    index = build_index(X[:2000], method="ivf", nlist=16, seed=0)
    index.add(X)
    I, D = search_index(index, X[:100], 4, nprobe=16)
    assert (I[:, 0] == np.arange(100)).all()  # self match first: raw search keeps it
    I2, D2 = drop_self_matches(I, D, 3)
    assert not (I2 == np.arange(100)[:, None]).any()


def test_merge_topk_and_recall_helpers():
    a = (np.array([[1, 2]]), np.array([[0.9, 0.1]], np.float32))
    b = (np.array([[7, -1]]), np.array([[0.5, -3e38]], np.float32))
    I, D = merge_topk([a, b], 3)
    assert I.tolist() == [[1, 7, 2]]
    assert recall_at_k(np.array([[1, 2], [3, -1]]), np.array([[2, 5], [3, -1]])) == pytest.approx(2 / 3)


def test_bad_input_raises_mixweave_errors():
    with pytest.raises(InputError, match="unit-norm"):
        knn(np.ones((5, 3), np.float32), 2)
    with pytest.raises(InputError):
        check_embeddings(np.array([[np.nan, 0.0]]))
    X = l2_normalize(np.eye(4))
    with pytest.raises(ConfigError):
        knn(X, 0)
    with pytest.raises(ConfigError):
        knn(X, 2, method="annoy")


@pytest.mark.gpu
def test_torch_cuda_matches_cpu(gaussian):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    I1, D1 = knn_torch(gaussian, 10, device="cpu")
    I2, D2 = knn_torch(gaussian, 10, device="cuda")
    assert recall_at_k(I2, I1) > 0.999
    np.testing.assert_allclose(D1, D2, atol=1e-3)


@pytest.mark.gpu
def test_faiss_gpu_flat_matches_cpu(gaussian):
    from mixweave.retrieval.knn import faiss_num_gpus

    if faiss_num_gpus() == 0:
        pytest.skip("faiss has no GPU (faiss-cpu installed or no CUDA device)")
    I1, _ = knn(gaussian, 10, method="flat", use_gpu=False)
    I2, _ = knn(gaussian, 10, method="flat", use_gpu=True)
    assert recall_at_k(I2, I1) > 0.999


def test_sampled_recall_matches_a_brute_force_count():
    from mixweave.retrieval.knn import sampled_recall_at_k

    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 16)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    S = X @ X.T
    np.fill_diagonal(S, -np.inf)
    exact = np.argsort(-S, axis=1, kind="stable")[:, :5]
    assert sampled_recall_at_k(X, exact, sample_size=100, seed=1) == 1.0
    damaged = exact.copy()
    damaged[:, :2] = -1  # two of five neighbours lost everywhere
    assert sampled_recall_at_k(X, damaged, sample_size=300, seed=1) == pytest.approx(0.6)
