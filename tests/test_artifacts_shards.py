"""The sharded artifact layout: fixed row blocks keyed by global document index."""

from __future__ import annotations

import numpy as np
import pytest

from mixweave.data.artifacts import knn_shards, load_keep, load_knn, load_order, order_files, shard_bounds


@pytest.mark.parametrize("n, rows", [(0, 4), (1, 4), (4, 4), (5, 4), (17, 16), (100, 7)])
def test_shard_bounds_cover_every_row_once(n, rows):
    bounds = shard_bounds(n, rows)
    covered = np.concatenate([np.arange(a, b) for a, b in bounds])
    assert np.array_equal(covered, np.arange(n))
    assert all(0 < b - a <= rows for a, b in bounds) or n == 0
    assert bounds[0][0] == 0


def test_shard_bounds_refuses_zero_rows():
    with pytest.raises(ValueError):
        shard_bounds(10, 0)


@pytest.mark.timeout(600)
def test_full_run_artifacts_are_sharded_and_concatenate_to_the_whole(full_run):
    from mixweave.data.artifacts import load_embeddings
    from mixweave.data.manifest import read_manifest

    out, rows = full_run.out, full_run.config.order.shard_rows
    multi = 0
    for source, info in read_manifest(out / "knn")["knn"].items():
        shards = knn_shards(out / "knn", source)
        n = load_embeddings(out / "embed", source).shape[0]
        assert [(s.start, s.stop) for s in shards] == shard_bounds(n, rows)
        multi += len(shards) > 1
        I, D = load_knn(out / "knn", source)
        assert I.shape == D.shape == (n, info["k"])
        assert load_keep(out / "dedup", source).shape == (n,)
        order = load_order(out / "order", source)
        assert order_files(out / "order", source)
        assert np.array_equal(np.sort(order), np.flatnonzero(load_keep(out / "dedup", source)))
    assert multi, "the full run's shard_rows should give some source several shards"
