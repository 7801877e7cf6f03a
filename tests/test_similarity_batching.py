"""Similarity batching (Lory, Zhong et al. 2024): the sampler and the hf/mds exports fill each global
batch with consecutive windows of one source's ICP stream. On the small reference run of
tests/conftest.py (its pack, embeddings and mixture, read only): the stream order recovered from the
pack's Feistel shuffle is the stream (window boundaries continue documents), the plan's window counts
are met exactly, the same seed gives the same order, a resumed sampler continues exactly, and the
within-batch coherence (mean pairwise cosine of the documents' embeddings) beats the shuffle."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter

import numpy as np
import pytest
from streaming_import import import_streaming

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from mixweave.data.artifacts import load_embeddings  # noqa: E402
from mixweave.data.windows import read_windows, window_documents, windows_info  # noqa: E402
from mixweave.errors import ConfigError, InputError  # noqa: E402
from mixweave.trainer.plan import load_plan  # noqa: E402
from mixweave.trainer.sampler import MixtureOrder, MixtureSampler, batch_coherence, stream_rows  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
G = 4  # windows per global batch


@pytest.fixture(scope="module")
def ref(small_runs):
    run = small_runs.reference
    plan = load_plan(run / "pack", run / "mix" / "mixture.json")
    stream = [stream_rows(run / "pack", n) for n in plan.names]
    docs = {n: window_documents(run / "pack", n) for n in plan.names}
    vectors = {n: load_embeddings(run / "embed", n) for n in plan.names}
    return run, plan, stream, docs, vectors


def test_stream_rows_undo_the_pack_shuffle(ref):
    """Consecutive stream windows continue the same document where one window ends (brute force over spans)."""
    import pyarrow.parquet as pq

    run, plan, stream, _, _ = ref
    info = windows_info(run / "pack")
    assert not info.plus_one
    for name, rows in zip(plan.names, stream):
        assert sorted(rows.tolist()) == list(range(info.sources[name]["n_windows"]))
        spans = pq.read_table(run / "pack" / "spans" / name).to_pandas().sort_values(["window_id", "start"])
        first = spans.groupby("window_id").first()
        last = spans.groupby("window_id").last()
        for a, b in zip(rows[:-1], rows[1:]):  # stream window w ends where w + 1 starts
            if last.loc[a, "end"] == info.seq_len and first.loc[b, "start"] == 0:
                assert last.loc[a, "doc"] == first.loc[b, "doc"]
                assert first.loc[b, "doc_offset"] == last.loc[a, "doc_offset"] + last.loc[a, "end"] - last.loc[a, "start"]


def test_similarity_order_meets_the_plan_exactly_and_is_seeded(ref):
    _, plan, stream, _, _ = ref
    order = MixtureOrder(plan, batching="similarity", global_batch=G, stream=stream)
    src, win = order.lookup(np.arange(order.total))
    counts = Counter(src.tolist())
    assert [counts[i] for i in range(len(plan.sources))] == plan.target_windows.tolist()
    for i, s in enumerate(plan.sources):  # whole epochs before repeats
        used = Counter(win[src == i].tolist())
        assert len(used) == min(s.n_windows, s.target_windows) and max(used.values()) - min(used.values()) <= 1
    # a batch is one source's consecutive stream windows (all but at most len(sources) mixed batches)
    pos = [np.argsort(s) for s in stream]
    whole = 0
    for b in range(order.total // G):
        s, w = src[b * G:(b + 1) * G], win[b * G:(b + 1) * G]
        if (s == s[0]).all():
            p = pos[s[0]][w]
            n = plan.sources[s[0]].n_windows
            whole += bool((np.diff(p) % n == 1).all())
    assert whole >= order.total // G - len(plan.sources) - 1
    again = MixtureOrder(plan, batching="similarity", global_batch=G, stream=stream).lookup(np.arange(order.total))
    assert np.array_equal(again[0], src) and np.array_equal(again[1], win)
    other = MixtureOrder(plan, seed=plan.seed + 1, batching="similarity", global_batch=G, stream=stream)
    assert not np.array_equal(other.lookup(np.arange(order.total))[1], win)
    with pytest.raises(ConfigError, match="global batch"):
        MixtureOrder(plan, batching="similarity")


def test_resumed_sampler_continues_exactly(ref):
    _, plan, stream, _, _ = ref
    offsets = np.concatenate([[0], np.cumsum(plan.n_windows)[:-1]])

    def sampler():
        return MixtureSampler(MixtureOrder(plan, batching="similarity", global_batch=G, stream=stream), offsets)

    full = sampler().take(3 * G + 5)
    first = sampler()
    head = first.take(G + 1)
    resumed = sampler()
    resumed.load_state_dict(first.state_dict())
    assert np.array_equal(np.concatenate([head, resumed.take(2 * G + 4)]), full)
    shuffled = MixtureSampler(MixtureOrder(plan), offsets)
    with pytest.raises(InputError, match="batching"):
        shuffled.load_state_dict(first.state_dict())


def test_similarity_batches_are_more_coherent_than_the_shuffle(ref):
    _, plan, stream, docs, vectors = ref
    got = {mode: batch_coherence(MixtureOrder(plan, batching=mode, global_batch=G, stream=stream), docs, vectors,
                                 global_batch=G) for mode in ("similarity", "shuffle")}
    assert got["similarity"]["batches"] == got["shuffle"]["batches"] == plan.total_windows // G
    for key in ("window_pairs", "doc_pairs"):
        assert got["similarity"][key] > got["shuffle"][key] + 0.02, got
    # the closed forms against brute-force pairwise cosines for the first batch
    order = MixtureOrder(plan, batching="shuffle")
    src, win = order.lookup(np.arange(G))

    def members(i, r):
        indptr, d = docs[plan.names[i]]
        return d[indptr[r]:indptr[r + 1]]

    x = np.concatenate([vectors[plan.names[i]][np.unique(np.concatenate([members(i, r) for r in win[src == i]]))]
                        for i in np.unique(src)]).astype(np.float64)
    v = np.stack([vectors[plan.names[i]][members(i, r)].astype(np.float64).mean(0) for i, r in zip(src, win)])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    one = batch_coherence(order, docs, vectors, global_batch=G, max_batches=1)
    assert one["doc_pairs"] == pytest.approx((x @ x.T)[np.triu_indices(len(x), 1)].mean())
    assert one["window_pairs"] == pytest.approx((v @ v.T)[np.triu_indices(G, 1)].mean())


def test_batched_exports_read_in_order_with_coherence_in_the_manifest(ref, tmp_path):
    import datasets

    from mixweave.data.manifest import read_manifest
    from mixweave.pipeline.export import export

    run, plan, stream, _, _ = ref
    windows = {n: read_windows(run / "pack", n) for n in plan.names}
    order = MixtureOrder(plan, batching="similarity", global_batch=G,
                         stream=[stream_rows(run / "pack", n) for n in plan.names])
    src, win = order.lookup(np.arange(order.total))
    expected = np.stack([windows[plan.names[s]][w] for s, w in zip(src, win)])
    hf = export("hf", run / "pack", run / "mix" / "mixture.json", tmp_path / "hf", batching="similarity",
                global_batch_size=G)
    report = read_manifest(tmp_path / "hf")["export"]["batch_coherence"]
    assert report["global_batch"] == G
    for key in ("window_pairs", "doc_pairs"):  # above the shuffle, and above one-source batches in random order
        assert report["similarity"][key] > report["source_shuffle"][key] > report["shuffle"][key], report
    assert hf["rows"] == {s.name: s.target_windows for s in plan.sources if s.target_windows}
    datasets.utils.logging.disable_progress_bar()
    call = json.loads((tmp_path / "hf" / "interleave.json").read_text())
    ds = datasets.load_dataset(**call["batched"], cache_dir=str(tmp_path / "cache")).with_format("numpy")
    assert np.array_equal(np.stack(list(ds["input_ids"])), expected)
    export("mds", run / "pack", run / "mix" / "mixture.json", tmp_path / "mds", batching="similarity",
           global_batch_size=G, mds_size_limit=1 << 14)
    old = tempfile.tempdir
    try:
        _, StreamingDataset = import_streaming(tmp_path / "streaming-tmp")
        ds = StreamingDataset(local=str(tmp_path / "mds" / "batched"), shuffle=False, batch_size=1)
        assert np.array_equal(np.stack([ds[i]["tokens"] for i in range(len(ds))]), expected)
    finally:
        tempfile.tempdir = old
    with pytest.raises(ConfigError, match="global_batch_size"):
        export("hf", run / "pack", run / "mix" / "mixture.json", tmp_path / "x", batching="similarity")
    with pytest.raises(ConfigError, match="does not take"):
        export("megatron", run / "pack", run / "mix" / "mixture.json", tmp_path / "x", batching="similarity")


def test_trainer_trains_with_similarity_batching(ref, tmp_path):
    from mixweave.trainer.config import TrainConfig
    from mixweave.trainer.dataset import MixtureLoader, PackDataset
    from mixweave.trainer.train import train_plan

    run, plan, _, _, _ = ref
    dataset = PackDataset(run / "pack", plan.names)
    loader = MixtureLoader(dataset, plan, 2, batching="similarity", global_batch=G)
    assert loader.state_dict()["batching"] == "similarity"
    result = train_plan(plan, run / "pack", tmp_path / "train",
                        TrainConfig(depth=1, steps=2, batch_size=2, log_interval=1, holdout_windows=0,
                                    batching="similarity"), dataset=dataset)
    assert result.step == 2
    with pytest.raises(ConfigError, match="batching"):
        TrainConfig(batching="nearest")
