"""Exporters: each format is read back by the target's own library (token-exact round trip, and
weights/repetition as planned). Real text: the corpus fixture (or stdlib sources), GPT-2 BPE."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
import types
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from streaming_import import import_streaming
import yaml

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("OLMO_DISABLE_PER_RANK_TRITON_CACHE", "1")

from mixweave.data.manifest import verify_stage  # noqa: E402
from mixweave.data.mixture_manifest import build_mixture_manifest, write_mixture_manifest  # noqa: E402
from mixweave.data.windows import read_windows, write_pack_artifact  # noqa: E402
from mixweave.errors import ConfigError, InputError, ManifestError  # noqa: E402
from mixweave.mixers import solve  # noqa: E402
from mixweave.pipeline.export import FORMATS, export  # noqa: E402
from mixweave.trainer.plan import load_plan  # noqa: E402
from mixweave.trainer.sample_data import build_sample_inputs  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
CORPUS = Path(__file__).parent / "data" / "corpus"
S = 64
SOURCES = ["books", "code", "web"]
DS_FILES = "**/*.ds"  # a source's .ds files sit in head/ and rest/ (datatrove's default "*.ds" stays at the top)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_inputs")
    # equal shares of sources of different sizes (UniMax below its caps): small sources repeat (epochs > 1)
    # and large ones are downsampled (< 1), all within the cap
    sample = build_sample_inputs(root, seq_len=S, corpus_dir=CORPUS, sources=SOURCES, max_chars_per_source=60_000,
                                 max_epochs=3.0, budget_tokens=None)
    plan = load_plan(sample.pack_dir, sample.mixture_path)
    epochs = [s.epochs for s in plan.sources]
    assert max(epochs) > 1.0 > min(epochs), epochs  # the scenario the tests need
    windows = {n: read_windows(sample.pack_dir, n) for n in plan.names}
    return types.SimpleNamespace(**vars(sample), plan=plan, windows=windows, root=root)


@pytest.fixture(scope="module")
def exported(inputs):
    return {fmt: export(fmt, inputs.pack_dir, inputs.mixture_path, inputs.root / "exp" / fmt) for fmt in FORMATS}


def _lookup(windows: dict[str, np.ndarray]) -> dict[bytes, tuple[str, int]]:
    return {row.astype(np.int64).tobytes(): (name, i) for name, w in windows.items() for i, row in enumerate(w)}


def _key(row) -> bytes:
    return np.asarray(row).astype(np.int64).tobytes()


def _check_counts(drawn: list[tuple[str, int]], inputs) -> None:
    """Per-source draws equal the plan's T_i, and no window repeats more than ceil(epochs)."""
    per_source = Counter(name for name, _ in drawn)
    assert dict(per_source) == {s.name: s.target_windows for s in inputs.plan.sources if s.target_windows}
    for (name, _), times in Counter(drawn).items():
        assert times <= int(np.ceil(inputs.plan.source(name).epochs))


# -- plan -------------------------------------------------------------------------------------------------


def test_plan_meets_targets_within_caps(inputs):
    mixture = json.loads(Path(inputs.mixture_path).read_text())
    plan = inputs.plan
    assert plan.total_windows == round(mixture["budget_tokens"] / S)
    for src in mixture["sources"]:
        sp = plan.source(src["name"])
        assert abs(sp.target_windows * S - src["target_tokens"]) < S
        assert sp.epochs <= src["max_epochs"] + 1e-9
        assert sp.n_windows == inputs.windows[src["name"]].shape[0]


# -- Megatron ---------------------------------------------------------------------------------------------


def test_megatron_idx_layout_is_mmidx_v1(tmp_path):
    from mixweave.pipeline.export.megatron import write_indexed

    write_indexed(tmp_path / "x", np.array([[5, 6, 7, 8, 9], [1, 2, 3, 4, 0]], dtype=np.uint16))
    idx = (tmp_path / "x.idx").read_bytes()
    assert idx[:9] == b"MMIDIDX\x00\x00" and struct.unpack("<QBQQ", idx[9:34]) == (1, 8, 2, 3)
    assert len(idx) == 34 + 2 * 4 + 2 * 8 + 3 * 8
    assert np.frombuffer(idx[34:42], np.int32).tolist() == [5, 5]
    assert np.frombuffer(idx[42:58], np.int64).tolist() == [0, 10]
    assert np.frombuffer(idx[58:82], np.int64).tolist() == [0, 1, 2]
    assert (tmp_path / "x.bin").read_bytes() == np.array([5, 6, 7, 8, 9, 1, 2, 3, 4, 0], "<u2").tobytes()


def _megatron() -> types.SimpleNamespace:
    """megatron-core's dataset classes (imported lazily: the import takes seconds)."""
    warnings.filterwarnings("ignore", message=".*Transformer Engine.*")
    warnings.filterwarnings("ignore", message=".*Apex.*")
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megatron.core.datasets.utils import get_blend_from_list
    from megatron.core.tokenizers import MegatronTokenizer

    return types.SimpleNamespace(BlendedMegatronDatasetBuilder=BlendedMegatronDatasetBuilder, GPTDataset=GPTDataset,
                                 GPTDatasetConfig=GPTDatasetConfig, IndexedDataset=IndexedDataset,
                                 get_blend_from_list=get_blend_from_list, MegatronTokenizer=MegatronTokenizer)


def test_megatron_roundtrip_with_indexed_dataset(inputs, exported):
    mc = _megatron()
    summary = exported["megatron"]
    for name, prefix in summary["prefixes"].items():
        ds = mc.IndexedDataset(prefix)
        w = inputs.windows[name]
        assert len(ds) == w.shape[0] and ds[0].dtype == np.uint16
        assert (ds.sequence_lengths == S).all()
        assert np.array_equal(np.stack([ds[i] for i in range(len(ds))]), w)


@contextlib.contextmanager
def one_rank_group(tmp: Path):
    """A 1-rank gloo process group for the block: Megatron's BlendedDataset needs torch.distributed to
    save its index cache to ``path_to_cache``; without a cache path GPTDataset writes its cache INTO
    the export folder (``<prefix>/cache/``), which then no longer verifies. Destroyed afterwards so
    later tests (the trainer) do not see a process group."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp / 'pg'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_megatron_blend_draws_planned_windows(inputs, exported, tmp_path):
    mc = _megatron()
    out = Path(exported["megatron"]["out"])
    per_split = json.loads((out / "data_args.json").read_text())
    assert set(per_split) == {"train", "valid", "test"}
    assert (out / "data_path.txt").read_text().split() == per_split["train"]
    sequences = {k: tuple(v) for k, v in json.loads((out / "sequences_per_dataset.json").read_text()).items()}
    tok = mc.MegatronTokenizer.from_pretrained(metadata_path={"library": "null"}, vocab_size=50257)
    config = mc.GPTDatasetConfig(random_seed=1, sequence_length=S, blend=mc.get_blend_from_list(per_split["train"]),
                                 split="100,0,0", tokenizer=tok, reset_position_ids=False, reset_attention_mask=False,
                                 eod_mask_loss=False, sequences_per_dataset=sequences,
                                 path_to_cache=str(tmp_path / "cache"))
    n = exported["megatron"]["train_samples"]
    with one_rank_group(tmp_path):
        train, _, _ = mc.BlendedMegatronDatasetBuilder(mc.GPTDataset, [n, 0, 0], lambda: True, config).build()
    assert n == inputs.plan.total_windows
    # Megatron asks each dataset for ceil(N * w_i) samples: float noise can add one sample per source
    assert n <= len(train) <= n + len(inputs.plan.sources)
    lookup = _lookup(inputs.windows)
    drawn = []
    for i in range(len(train)):
        sample = train[i]
        name, w = lookup[_key(sample["tokens"])]  # every sample is one whole window ...
        assert np.array_equal(sample["labels"][:-1].numpy(), inputs.windows[name][w][1:])  # ... shifted inside
        drawn.append((name, w))
    per_source = Counter(name for name, _ in drawn)
    for s in inputs.plan.sources:
        assert 0 <= per_source[s.name] - s.target_windows <= 1
    for (name, _), times in Counter(drawn).items():  # repetition = whole extra epochs of shuffled windows
        per_epoch = inputs.windows[name].shape[0] - 1  # GPTDataset: W windows give W-1 samples an epoch
        assert times <= int(np.ceil((inputs.plan.source(name).target_windows + 1) / per_epoch))


# -- OLMo-core --------------------------------------------------------------------------------------------


def _olmo_tokenizer():
    from olmo_core.data import TokenizerConfig

    return TokenizerConfig(vocab_size=50257, eos_token_id=50256, pad_token_id=50256)


def test_olmo_roundtrip_with_numpy_fsl_dataset(inputs, exported, tmp_path):
    from olmo_core.data import NumpyFSLDatasetConfig

    for name, paths in exported["olmo"]["paths"].items():
        ds = NumpyFSLDatasetConfig(tokenizer=_olmo_tokenizer(), paths=paths, sequence_length=S, dtype="uint16",
                                   work_dir=str(tmp_path / name)).build()
        ds.prepare()
        assert len(ds) == inputs.windows[name].shape[0]
        assert np.array_equal(np.stack([ds[i]["input_ids"].numpy() for i in range(len(ds))]), inputs.windows[name])
        path = Path(paths[0])
        assert path.stat().st_size == inputs.windows[name].size * 2  # headerless, length a multiple of S
        import gzip

        rows = [line.split(",") for line in gzip.open(path.with_suffix(".csv.gz"), "rt").read().splitlines()]
        starts, ends = np.array([int(r[0]) for r in rows]), np.array([int(r[1]) for r in rows])
        assert starts[0] == 0 and ends[-1] == inputs.windows[name].size and (starts[1:] == ends[:-1]).all()
        assert set(np.arange(1, inputs.windows[name].shape[0] + 1) * S) <= set(ends.tolist())


def test_olmo_source_mixture_draws_planned_windows(inputs, exported, tmp_path):
    from olmo_core.data import NumpyFSLDatasetConfig
    from olmo_core.data.source_mixture import SourceMixtureDatasetConfig

    config = yaml.safe_load((Path(exported["olmo"]["out"]) / "source_mixture.yaml").read_text())
    mix = SourceMixtureDatasetConfig.from_dict(config)
    mix.render_tables, mix.quiet = False, True
    for s in config["source_list"]["sources"]:
        sp = inputs.plan.source(s["source_name"])
        assert s["max_repetition_ratio"] >= max(1.0, sp.epochs) and s["max_repetition_ratio"] == max(1.0, sp.max_epochs)
    ds = NumpyFSLDatasetConfig.from_src_mix(mix, tokenizer=_olmo_tokenizer(), sequence_length=S, dtype="uint16",
                                            work_dir=str(tmp_path)).build()
    ds.prepare()
    lookup = _lookup(inputs.windows)
    _check_counts([lookup[_key(ds[i]["input_ids"])] for i in range(len(ds))], inputs)


# -- MosaicML Streaming -----------------------------------------------------------------------------------


def _streaming(tmp: Path):
    return import_streaming(tmp)


@pytest.fixture
def streaming_tmp():
    old = tempfile.tempdir
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)
    tempfile.tempdir = old


def test_mds_roundtrip_with_streaming_dataset(inputs, exported, streaming_tmp):
    Stream, StreamingDataset = _streaming(streaming_tmp)
    out = Path(exported["mds"]["out"])
    for name, w in inputs.windows.items():
        ds = StreamingDataset(local=str(out / name), shuffle=False, batch_size=1)
        assert len(ds) == w.shape[0]
        assert np.array_equal(np.stack([ds[i]["tokens"] for i in range(len(ds))]), w)
        assert ds[0]["tokens"].dtype == np.uint16


def test_mds_choose_streams_draw_planned_windows(inputs, exported, streaming_tmp):
    Stream, StreamingDataset = _streaming(streaming_tmp)
    dataset = yaml.safe_load((Path(exported["mds"]["out"]) / "streams.yaml").read_text())["train_loader"]["dataset"]
    assert dataset["max_seq_len"] == S
    streams = [Stream(**s) for s in dataset["streams"].values()]
    ds = StreamingDataset(streams=streams, shuffle=False, batch_size=1)
    lookup = _lookup(inputs.windows)
    _check_counts([lookup[_key(sample["tokens"])] for sample in ds], inputs)


def test_mds_proportion_streams(inputs, tmp_path, streaming_tmp):
    Stream, StreamingDataset = _streaming(streaming_tmp)
    out = tmp_path / "mds_prop"
    export("mds", inputs.pack_dir, inputs.mixture_path, out, mds_weighting="proportion", mds_size_limit=1 << 14)
    dataset = yaml.safe_load((out / "streams.yaml").read_text())["train_loader"]["dataset"]
    assert dataset["epoch_size"] == inputs.plan.total_windows
    assert len(json.loads((out / "books" / "index.json").read_text())["shards"]) > 1  # shards cut by size_limit
    streams = [Stream(**s) for s in dataset["streams"].values()]
    ds = StreamingDataset(streams=streams, shuffle=False, batch_size=1, epoch_size=dataset["epoch_size"])
    lookup = _lookup(inputs.windows)
    drawn = Counter(lookup[_key(sample["tokens"])][0] for sample in ds)
    for s in inputs.plan.sources:  # proportion is relative: streaming rounds per stream
        assert abs(drawn[s.name] - s.target_windows) <= 1


# -- Hugging Face datasets --------------------------------------------------------------------------------


def test_hf_parquet_interleave_draws_planned_windows(inputs, exported, tmp_path):
    import datasets

    datasets.utils.logging.disable_progress_bar()
    call = json.loads((Path(exported["hf"]["out"]) / "interleave.json").read_text())
    parts = [datasets.load_dataset(**call["datasets"][n], cache_dir=str(tmp_path)) for n in call["order"]]
    assert parts[0].features["input_ids"].feature.dtype == "uint16"
    mixed = datasets.interleave_datasets(parts, **call["interleave_datasets"])
    lookup = _lookup(inputs.windows)
    rows = mixed.with_format("numpy")["input_ids"]
    _check_counts([lookup[_key(r)] for r in rows], inputs)


def test_hf_without_materialising_writes_each_window_once(inputs, tmp_path):
    import datasets

    out = tmp_path / "hf_once"
    summary = export("hf", inputs.pack_dir, inputs.mixture_path, out, hf_materialize=False)
    call = json.loads((out / "interleave.json").read_text())
    assert call["interleave_datasets"]["stopping_strategy"] == "all_exhausted"
    for name, w in inputs.windows.items():
        ds = datasets.load_dataset(**call["datasets"][name], cache_dir=str(tmp_path / "c")).with_format("numpy")
        assert np.array_equal(np.stack(list(ds["input_ids"])), w) and summary["rows"][name] == w.shape[0]


# -- datatrove / nanotron ---------------------------------------------------------------------------------


def test_datatrove_roundtrip_s_windows_borrow_next_label(inputs, exported):
    from datatrove.utils.dataset import DatatroveFolderDataset

    out = Path(exported["datatrove"]["out"])
    for name, w in inputs.windows.items():
        ds = DatatroveFolderDataset(str(out / name), seq_len=S, token_size=2, shuffle=False, return_positions=True,
                                    filename_pattern=DS_FILES)
        assert len(ds) == w.shape[0]
        got = np.stack([ds[i]["input_ids"].numpy() for i in range(len(ds))])
        assert np.array_equal(got[:, :S], w) and np.array_equal(got[:, S], np.roll(w[:, 0], -1))
        # positions restart after every EOS (the .ds.index holds the document ends)
        item = next(i for i in range(len(ds)) if (w[i][:-1] == 50256).any())
        eos = int(np.flatnonzero(w[item] == 50256)[0])
        assert int(ds[item]["positions"][eos + 1]) == 0
        meta = (out / name / "head" / f"{name}_00000.ds.metadata").read_text().splitlines()
        head = inputs.plan.source(name).target_windows % w.shape[0] or w.shape[0]
        assert meta[0] == "gpt2|2" and int(meta[1]) == head * (S + 1)


def test_datatrove_plus_one_pack_keeps_true_labels(tmp_path):
    from datatrove.utils.dataset import DatatroveFolderDataset

    from mixweave.data.tokenizer import load_tokenizer

    tok = load_tokenizer()
    text = Path(json.__file__).read_text() + Path(yaml.__file__).read_text()
    stream = np.array(tok.encode(text), dtype=np.uint16)
    n = (stream.size - 1) // S
    windows = np.lib.stride_tricks.sliding_window_view(stream[: n * S + 1], S + 1)[::S]
    pack = write_pack_artifact(tmp_path / "pack", {"code": windows}, seq_len=S, plus_one=True, tokenizer=tok.info)
    mixture = _manual_mixture(tmp_path, {"code": n * S}, {"code": 1.0}, n * S, tok.info, window={
        "tokens": S + 1, "doc_separator": "eos", "labels": "extra_token"})
    export("datatrove", pack, mixture, tmp_path / "dt")
    ds = DatatroveFolderDataset(str(tmp_path / "dt" / "code"), seq_len=S, token_size=2, filename_pattern=DS_FILES)
    assert np.array_equal(np.stack([ds[i]["input_ids"].numpy() for i in range(len(ds))]), windows)
    export("megatron", pack, mixture, tmp_path / "meg")  # S+1 windows lose their last token for S targets
    bin_ = np.fromfile(tmp_path / "meg" / "code_text_document.bin", np.uint16).reshape(-1, S)
    assert np.array_equal(bin_, windows[:, :S])


def test_nanotron_weights_are_token_shares(inputs, exported):
    stage = yaml.safe_load((Path(exported["datatrove"]["out"]) / "nanotron.yaml").read_text())["data_stages"][0]
    dataset = stage["data"]["dataset"]
    weights = Counter()
    for folder, weight in zip(dataset["dataset_folder"], dataset["dataset_weights"]):
        weights[Path(folder).parent.name] += weight  # a source is listed as <name>/head and <name>/rest entries
    total = inputs.plan.total_windows
    assert dict(weights) == pytest.approx({s.name: s.target_windows / total for s in inputs.plan.sources})
    assert dataset["token_size_in_bytes"] == 2 and dataset["vocab_size"] == 50257


# -- contract: manifest, atomicity, skipping, errors, dtypes ----------------------------------------------


def test_every_export_has_a_verified_manifest_and_reruns_are_skipped(inputs, exported):
    for fmt, summary in exported.items():
        manifest = verify_stage(summary["out"])
        listed = {f["path"] for f in manifest["files"]}
        assert set(summary["files"]) <= listed
        assert manifest["export"]["plan"]["total_windows"] == inputs.plan.total_windows
    again = export("megatron", inputs.pack_dir, inputs.mixture_path, exported["megatron"]["out"])
    assert again["skipped"] is True


def test_failed_export_leaves_nothing(inputs, tmp_path, monkeypatch):
    import mixweave.pipeline.export as ex

    def boom(ctx, tmp):
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("disk full")

    monkeypatch.setattr(ex, "_writer", lambda fmt: boom)
    with pytest.raises(RuntimeError):
        ex.export("megatron", inputs.pack_dir, inputs.mixture_path, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def _manual_mixture(root: Path, n_tokens: dict, weights: dict, budget: float, tok_info: dict, *,
                    max_epochs=None, window=None, seq_len: int = S) -> Path:
    stats = {"sources": {n: {"n_tokens": t, "n_docs": 1, "paths": [n]} for n, t in n_tokens.items()}}
    mixture = solve({n: {"n_tokens": t} for n, t in n_tokens.items()}, budget, "manual", weights=weights,
                    max_epochs=max_epochs)
    manifest = build_mixture_manifest(mixture, stats, seq_len=seq_len, tokenizer=tok_info, seed=3, window=window)
    return write_mixture_manifest(root / "mixture.json", manifest)


def test_user_errors_name_the_fix(inputs, tmp_path):
    with pytest.raises(ConfigError, match="unknown export format"):
        export("parquetx", inputs.pack_dir, inputs.mixture_path, tmp_path / "x")
    with pytest.raises(ConfigError, match="does not take option"):
        export("megatron", inputs.pack_dir, inputs.mixture_path, tmp_path / "x", mds_weighting="choose")
    with pytest.raises(ManifestError):
        export("megatron", inputs.pack_dir, tmp_path / "missing.json", tmp_path / "x")
    tok = json.loads(Path(inputs.mixture_path).read_text())["tokenizer"]
    other = tmp_path / "other"
    other.mkdir()
    bad_len = _manual_mixture(other, {"books": 1000}, {"books": 1.0}, 1000, tok, seq_len=128)
    with pytest.raises(InputError, match="seq_len"):
        export("megatron", inputs.pack_dir, bad_len, tmp_path / "x")
    ghost = _manual_mixture(other, {"books": 1000, "ghost": 500}, {"books": 0.5, "ghost": 0.5}, 1000, tok)
    with pytest.raises(InputError, match="ghost"):
        export("megatron", inputs.pack_dir, ghost, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_epoch_cap_clips_when_pack_is_smaller_than_the_mixture(inputs, tmp_path, caplog):
    tok = json.loads(Path(inputs.mixture_path).read_text())["tokenizer"]
    w = inputs.windows["books"].shape[0]
    # the mixture believed books had twice the tokens the pack holds (e.g. before dedup)
    mixture = _manual_mixture(tmp_path, {"books": 2 * w * S, "code": 4 * w * S}, {"books": 0.5, "code": 0.5},
                              4 * w * S, tok, max_epochs=1.0)
    plan = load_plan(inputs.pack_dir, mixture)
    books = plan.source("books")
    assert books.target_windows == w and books.epochs == 1.0  # clipped to the cap, not beyond
    assert plan.to_dict()["sources"]["books"]["shortfall_tokens"] == pytest.approx(w * S)
    assert "clipped to the epoch cap" in caplog.text


def test_large_vocabulary_uses_four_byte_tokens(tmp_path):
    from datatrove.utils.dataset import DatatroveFolderDataset

    mc = _megatron()
    rng = np.random.default_rng(0)
    windows = rng.integers(0, 100_277, size=(12, S)).astype(np.uint32)
    windows[:, 5] = 100_276  # eos
    tok = {"name": "cl100k", "path": "/x/cl100k.tiktoken", "sha256": "a" * 64, "vocab_size": 100_277,
           "eos_id": 100_276, "dtype": "uint32"}
    pack = write_pack_artifact(tmp_path / "pack", {"web": windows}, seq_len=S, plus_one=False, tokenizer=tok)
    mixture = _manual_mixture(tmp_path, {"web": 12 * S}, {"web": 1.0}, 12 * S, tok)
    meg = export("megatron", pack, mixture, tmp_path / "meg")
    ds = mc.IndexedDataset(meg["prefixes"]["web"])
    assert ds[0].dtype == np.int32 and np.array_equal(np.stack([ds[i] for i in range(12)]), windows)
    dt = export("datatrove", pack, mixture, tmp_path / "dt")
    assert dt["token_size"] == 4
    ds = DatatroveFolderDataset(str(tmp_path / "dt" / "web"), seq_len=S, token_size=4, filename_pattern=DS_FILES)
    assert np.array_equal(np.stack([ds[i]["input_ids"].numpy()[:S] for i in range(12)]), windows)
    olmo = export("olmo", pack, mixture, tmp_path / "olmo")
    assert np.array_equal(np.fromfile(olmo["paths"]["web"][0], np.uint32).reshape(-1, S), windows)
    mds = export("mds", pack, mixture, tmp_path / "mds")
    assert mds["encoding"] == f"ndarray:uint32:{S}"


def test_export_cli_writes_each_format_under_out(inputs, tmp_path):
    from click.testing import CliRunner

    from mixweave.cli.export import command as export_command

    result = CliRunner().invoke(export_command, ["--format", "megatron", "--format", "hf", "--pack",
                                                 str(inputs.pack_dir), "--mixture", str(inputs.mixture_path),
                                                 "--out", str(tmp_path), "--path-prefix", "s3://bucket/run"])
    assert result.exit_code == 0, result.output
    assert "megatron" in result.output and "books" in result.output
    assert (tmp_path / "megatron" / "data_path.txt").read_text().split()[1] == \
        "s3://bucket/run/megatron/books_text_document"
    assert (tmp_path / "hf" / "interleave.json").is_file()


def test_export_cli_global_batch_size_writes_whole_batches(inputs, tmp_path):
    from click.testing import CliRunner

    from mixweave.cli.export import command as export_command

    result = CliRunner().invoke(export_command, ["--format", "olmo", "--pack", str(inputs.pack_dir), "--mixture",
                                                 str(inputs.mixture_path), "--out", str(tmp_path),
                                                 "--global-batch-size", "7"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((tmp_path / "olmo" / "source_mixture.yaml").read_text())
    assert config["global_batch_size"] == 7 * S and config["requested_tokens"] % (7 * S) == 0
    assert "OLMo-core at 7 sequences a batch realises" in result.output
    bad = CliRunner().invoke(export_command, ["--format", "olmo", "--pack", str(inputs.pack_dir), "--mixture",
                                              str(inputs.mixture_path), "--out", str(tmp_path / "b"),
                                              "--global-batch-size", "0"])
    assert bad.exit_code == 2 and "global-batch-size" in bad.output
