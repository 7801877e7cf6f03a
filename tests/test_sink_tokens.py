"""Attention-sink windows (StreamingLLM; ``order.sink_token``): the sink is a special token after the
vocabulary that no text encodes to; both pack paths put it at position 0 of every window (the same
bytes), its id is in the pack, mixture and export manifests, every trainer's own reader sees it, window
metrics exclude it, and the built-in trainer trains on such a pack.

Uses the small reference run of tests/conftest.py: its pack and mix stages are re-run with a sink into
this test's own folders (the reference is never changed), and the Spark pack job packs one source."""

from __future__ import annotations

import json
import os
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest
import yaml
from streaming_import import import_streaming

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("OLMO_DISABLE_PER_RANK_TRITON_CACHE", "1")

from mixweave.data.manifest import read_manifest  # noqa: E402
from mixweave.data.windows import read_windows, windows_info  # noqa: E402
from mixweave.errors import ConfigError, InputError  # noqa: E402
from mixweave.jobs.pack import plan_cuts  # noqa: E402
from mixweave.retrieval.pack import cut_windows, pack_windows, shuffled_rows  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
SINK = "<|sink|>"
S = 128  # the small runs' seq_len


# -- pure: the layout against a brute-force reference, and the partitioned cut of the Spark job ------------


@pytest.mark.parametrize("seed", range(12))
def test_sink_windows_match_brute_force_and_the_partitioned_cut(seed):
    rng = np.random.default_rng(seed)
    docs = [rng.integers(1, 900, size=int(rng.integers(0, 30))).tolist() for _ in range(int(rng.integers(1, 30)))]
    seq_len, plus_one, shuffle, sink = int(rng.integers(2, 40)), bool(seed % 2), bool(seed % 3), 1000
    p = pack_windows(docs, np.arange(len(docs)), seq_len=seq_len, eos_id=0, plus_one=plus_one, shuffle=shuffle,
                     seed=seed, sink_id=sink)
    stream = np.concatenate([np.asarray(d + [0], np.int64) for d in docs])
    step = seq_len - 1
    n = (stream.size - plus_one) // step if stream.size >= step + plus_one else 0
    ref = np.array([[sink, *stream[w * step: w * step + step + plus_one]] for w in range(n)],
                   np.int64).reshape(n, seq_len + plus_one)
    assert p.n_windows == n and np.array_equal(p.windows, ref[p.window_perm]) and p.sink_id == sink
    assert p.dropped_tokens == stream.size - (n * step + plus_one if n else 0)
    assert (p.windows[:, 0] == sink).all() and not (p.windows[:, 1:] == sink).any()
    for w in range(n):  # spans tile positions 1.. and carry the document's tokens
        m = p.span_window == w
        assert p.span_start[m][0] == 1 and p.span_end[m][-1] == seq_len + plus_one
        for d, a, b, o in zip(p.span_doc[m], p.span_start[m], p.span_end[m], p.span_doc_offset[m]):
            assert np.array_equal(p.windows[w, a:b], np.asarray(docs[d] + [0])[o:o + b - a])
    # what jobs.pack does per ordered partition (prefix sums + cut_windows + Feistel rows) gives the same
    parts = np.split(np.arange(len(docs)), np.sort(rng.integers(0, len(docs) + 1, size=3)))
    counts = {i: (len(ids), int(sum(len(docs[j]) for j in ids))) for i, ids in enumerate(parts) if len(ids)}
    cuts, summary = plan_cuts(counts, len(parts), seq_len=seq_len, plus_one=plus_one, sink=True)
    assert summary["n_windows"] == n and summary["dropped_tokens"] == p.dropped_tokens
    out = np.full((n, seq_len + plus_one), -1, np.int64)
    for c in cuts:
        ids = np.concatenate([parts[q] for q in [c["part"], *c["spill"]]])
        lengths = np.array([len(docs[j]) for j in ids], np.int64)
        flat = np.concatenate([np.asarray(docs[j], np.int64) for j in ids])
        cut = cut_windows(flat, np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths, stream_base=c["base"],
                          lo=c["lo"], hi=c["hi"], seq_len=seq_len, plus_one=plus_one, eos_id=0,
                          dtype=np.dtype(np.int32), sink_id=sink)
        rows = shuffled_rows(np.arange(c["lo"], c["hi"]), n, seed) if shuffle else np.arange(c["lo"], c["hi"])
        out[rows] = cut.windows
    assert np.array_equal(out, p.windows)


def test_sink_is_a_new_special_token_that_no_text_encodes_to(corpus_dir):
    from mixweave.data.tokenizer import load_tokenizer
    from mixweave.retrieval.config import OrderConfig

    base, tok = load_tokenizer("default"), load_tokenizer("default", None, SINK)
    assert tok.sink_id == base.vocab_size and tok.vocab_size == base.vocab_size + 1
    assert tok.info["sink_id"] == tok.sink_id and tok.info["sink_token"] == SINK
    assert tok.sha256 != base.sha256 and tok.info["base_sha256"] == base.sha256 and tok.name != base.name
    texts = [f"a {SINK} b <|endoftext|>", SINK] + [line for path in sorted(corpus_dir.glob("*/*.jsonl"))[:3]
                                                    for line in path.read_text().splitlines()[:20]]
    ids = tok.encode_batch(texts)
    assert ids == base.encode_batch(texts) and max(max(i) for i in ids if i) < tok.sink_id
    with pytest.raises(ConfigError, match="sink_token"):
        OrderConfig(sink_token="")
    with pytest.raises(ConfigError, match="seq_len"):
        OrderConfig(sink_token=SINK, seq_len=1)


# -- the pipeline: pack (both paths) and mix with a sink --------------------------------------------------------


@pytest.fixture(scope="module")
def sink_run(small_runs, tmp_path_factory):
    """The reference run's pack (in process) and mix stages re-run with ``order.sink_token`` into
    this module's folders."""
    from mixweave.pipeline.runner import StageContext, run_stage
    from mixweave.pipeline.stages import build_stages

    root = tmp_path_factory.mktemp("sink_run")
    ref = small_runs.reference
    order = {"k": 4, "seq_len": S, "max_tokens": 32, "batch_size": 64, "shard_rows": 16, "sink_token": SINK,
             "pack_file_windows": 16}
    stages = build_stages()
    config = small_runs.config(ref, small_runs.globs, order=order)
    over = {"pack": root / "pack", "mix": root / "mix"}
    run_stage(stages["pack"], StageContext(config=config, out=ref, overrides=over))
    run_stage(stages["mix"], StageContext(config=config, out=ref, overrides=over))
    return types.SimpleNamespace(root=root, pack=root / "pack", mixture=root / "mix" / "mixture.json", ref=ref,
                                 seed=config.seed, info=windows_info(root / "pack"))


def test_every_window_starts_with_the_sink_and_its_id_is_in_the_manifests(sink_run):
    info, sink = sink_run.info, sink_run.info.sink_id
    assert sink == 50257 and info.tokenizer["vocab_size"] == 50258 and info.tokenizer["sink_token"] == SINK
    assert read_manifest(sink_run.pack)["windows"]["sink_id"] == sink
    base = windows_info(sink_run.ref / "pack")
    assert base.sink_id is None and base.tokenizer["sha256"] != info.tokenizer["sha256"]
    for name in info.sources:
        w = read_windows(sink_run.pack, name)
        assert w.shape[1] == S and (w[:, 0] == sink).all() and not (w[:, 1:] == sink).any()
        # the stream advances S - 1 tokens a window: more windows than without the sink, same documents
        assert info.sources[name]["n_windows"] == info.sources[name]["stream_tokens"] // (S - 1)
        assert info.sources[name]["n_docs"] == base.sources[name]["n_docs"]
        metrics = json.loads((sink_run.pack / "metrics" / f"{name}.json").read_text())
        assert 0 <= metrics["jump_rate"] <= 1 and -1 <= metrics["window_pairwise_cosine_mean"] <= 1
    mixture = json.loads(sink_run.mixture.read_text())
    assert mixture["window"]["sink_id"] == sink and mixture["tokenizer"]["sha256"] == info.tokenizer["sha256"]
    assert mixture["tokenizer"]["vocab_size"] == 50258


@pytest.mark.spark
def test_spark_pack_with_sink_equals_the_in_process_pack_byte_for_byte(sink_run, spark, tmp_path):
    """The Spark pack job (jobs.pack) of the smallest source, in partitions of 7 documents, writes the
    in-process pack stage's windows and spans files byte for byte."""
    from mixweave.data.artifacts import docs_files_by_source, order_files
    from mixweave.jobs.pack import run_spark_pack
    from mixweave.retrieval.pack import source_seed

    info = sink_run.info
    name = min(info.sources, key=lambda n: info.sources[n]["stream_tokens"])
    res = run_spark_pack(spark, source=name, order_paths=order_files(sink_run.ref / "order", name),
                         docs_files=docs_files_by_source(sink_run.ref / "ingest")[name], out_root=tmp_path,
                         work_dir=tmp_path / ".work", tokenizer_path="default", tokenizer_pattern=None,
                         eos_id=info.tokenizer["eos_id"], dtype=info.tokenizer["dtype"], seq_len=S, plus_one=False,
                         shuffle=True, seed=source_seed(sink_run.seed, name), part_docs=7, per_file=16,
                         sink_id=info.sink_id)
    entry = info.sources[name]
    assert res["partitions"] > 1 and res["files"] == entry["files"]
    for key in ("n_windows", "dropped_tokens", "stream_tokens", "n_docs"):
        assert res[key] == entry[key], key
    for kind in ("windows", "spans"):
        local = sorted(p.name for p in (sink_run.pack / kind / name).iterdir())
        assert local == sorted(p.name for p in (tmp_path / kind / name).iterdir())
        for file in local:
            assert (sink_run.pack / kind / name / file).read_bytes() == (tmp_path / kind / name / file).read_bytes()


def test_plans_refuse_to_mix_packs_with_and_without_the_sink(sink_run, small_runs):
    from mixweave.trainer.plan import load_plan

    with pytest.raises(InputError, match="tokenizer"):
        load_plan(small_runs.reference / "pack", sink_run.mixture)
    with pytest.raises(InputError, match="tokenizer"):
        load_plan(sink_run.pack, small_runs.reference / "mix" / "mixture.json")


# -- exports: each trainer's reader sees the sink ---------------------------------------------------------------


def test_exports_keep_the_sink_and_trainers_read_it_back(sink_run, tmp_path):
    from datatrove.utils.dataset import DatatroveFolderDataset
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from olmo_core.data import NumpyFSLDatasetConfig, TokenizerConfig

    from mixweave.pipeline.export import FORMATS, export

    info, sink = sink_run.info, sink_run.info.sink_id
    windows = {n: read_windows(sink_run.pack, n) for n in info.sources}
    out = {fmt: export(fmt, sink_run.pack, sink_run.mixture, tmp_path / fmt, hf_materialize=False)
           if fmt == "hf" else export(fmt, sink_run.pack, sink_run.mixture, tmp_path / fmt) for fmt in FORMATS}
    for fmt, summary in out.items():
        assert summary["sink_id"] == sink and summary["vocab_size"] == 50258, fmt
        assert read_manifest(tmp_path / fmt)["export"]["sink_id"] == sink
    assert "--vocab-size 50258" in (tmp_path / "megatron" / "megatron_args.txt").read_text()
    for name, prefix in out["megatron"]["prefixes"].items():
        ds = IndexedDataset(prefix)
        assert np.array_equal(np.stack([ds[i] for i in range(len(ds))]), windows[name])
    tok = TokenizerConfig(vocab_size=50258, eos_token_id=50256, pad_token_id=50256)
    for name, paths in out["olmo"]["paths"].items():
        ds = NumpyFSLDatasetConfig(tokenizer=tok, paths=paths, sequence_length=S, dtype="uint16",
                                   work_dir=str(tmp_path / "olmo-work" / name)).build()
        ds.prepare()
        assert np.array_equal(np.stack([ds[i]["input_ids"].numpy() for i in range(len(ds))]), windows[name])
    old = tempfile.tempdir
    try:
        _, StreamingDataset = import_streaming(tmp_path / "streaming-tmp")
        for name in info.sources:
            ds = StreamingDataset(local=str(tmp_path / "mds" / name), shuffle=False, batch_size=1)
            assert np.array_equal(np.stack([ds[i]["tokens"] for i in range(len(ds))]), windows[name])
    finally:
        tempfile.tempdir = old
    assert str(sink) in (tmp_path / "mds" / "streams.yaml").read_text().splitlines()[1]
    import datasets

    datasets.utils.logging.disable_progress_bar()
    call = json.loads((tmp_path / "hf" / "interleave.json").read_text())
    assert call["sink_id"] == sink and call["vocab_size"] == 50258
    for name in info.sources:
        ds = datasets.load_dataset(**call["datasets"][name], cache_dir=str(tmp_path / "hf-cache")).with_format("numpy")
        assert np.array_equal(np.stack(list(ds["input_ids"])), windows[name])
    stage = yaml.safe_load((tmp_path / "datatrove" / "nanotron.yaml").read_text())["data_stages"][0]
    assert stage["data"]["dataset"]["vocab_size"] == 50258
    for name, w in windows.items():
        ds = DatatroveFolderDataset(str(tmp_path / "datatrove" / name), seq_len=S, token_size=2, shuffle=False,
                                    filename_pattern="**/*.ds")
        got = np.stack([ds[i]["input_ids"].numpy() for i in range(len(ds))])
        assert np.array_equal(got[:, :S], w)  # head/ then rest/: the pack's order
        assert (got[:, 0] == sink).all() and not (got[:, S] == sink).any()  # the borrowed label is never the sink


# -- the built-in trainer ---------------------------------------------------------------------------------------


def test_trainer_trains_on_a_sink_pack(sink_run, tmp_path):
    from mixweave.trainer.config import TrainConfig
    from mixweave.trainer.dataset import MixtureLoader, PackDataset
    from mixweave.trainer.plan import load_plan
    from mixweave.trainer.train import train_plan

    plan = load_plan(sink_run.pack, sink_run.mixture)
    assert plan.tokenizer["vocab_size"] == 50258
    dataset = PackDataset(sink_run.pack, plan.names)
    batch = MixtureLoader(dataset, plan, 4).next_batch()
    assert (batch[:, 0] == sink_run.info.sink_id).all()
    result = train_plan(plan, sink_run.pack, tmp_path / "train",
                        TrainConfig(depth=1, steps=2, batch_size=2, log_interval=1, holdout_windows=0),
                        dataset=dataset)
    assert result.step == 2
    rows = [json.loads(line) for line in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
