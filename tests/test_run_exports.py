"""The exports of a `mixweave run`, read by each trainer's own library.

The session's shared run of the whole pipeline on the fixture corpus (tests/conftest.py,
``full_run``) up to ``pack``, then this module's own ``mix`` (UniMax over 9 sources: some drawn > 1
epoch, some downsampled) and ``export`` stage (all five formats), are shared by every test. Each test reads the stage's folder
(never the standalone exporter's) through the trainer configs it wrote: token-exact against the pack
windows, and the library's own sampler realises mixture.json's weights to within one window.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
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

from mixweave.data.manifest import read_manifest, verify_stage  # noqa: E402
from mixweave.data.mixture_manifest import read_mixture_manifest  # noqa: E402
from mixweave.data.windows import read_windows  # noqa: E402
from mixweave.pipeline.export import FORMATS, export  # noqa: E402
from mixweave.pipeline.export.common import batch_targets  # noqa: E402
from mixweave.pipeline.runner import StageContext, run_stage, run_stages  # noqa: E402
from mixweave.pipeline.stages import build_stages  # noqa: E402
from mixweave.trainer.plan import load_plan  # noqa: E402

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")]

SEQ_LEN = 256  # the full run's
EOS = 50256
CONFIG_FILES = {"megatron": ["data_path.txt", "data_args.json", "sequences_per_dataset.json", "megatron_args.txt"],
                "mds": ["streams.yaml"], "olmo": ["source_mixture.yaml"], "hf": ["interleave.json"],
                "datatrove": ["nanotron.yaml"]}


def run_config(full_run, **export_settings):
    """The shared run's config with UniMax and every export format (the utility stage stays configured)."""
    return full_run.config_for(full_run.out, mix={"method": "unimax", "max_epochs": 4},
                               export={"formats": list(FORMATS), **export_settings})


@pytest.fixture(scope="module")
def run(full_run, tmp_path_factory):
    """The run, its plan, the pack windows per source and a lookup from window tokens to (source, index).

    ``mix`` (UniMax: some sources drawn > 1 epoch, some downsampled) and ``export`` (all formats) run
    on the shared run's stages into this module's folders; everything up to ``pack`` is reused."""
    root = tmp_path_factory.mktemp("run_exports")
    overrides = {"mix": root / "mix", "export": root / "export"}
    config, out = run_config(full_run), full_run.out
    reports = {r.name: r.status for r in run_stages(build_stages(), config, wanted=["export"], overrides=overrides)}
    assert reports["mix"] == reports["export"] == "ran" and reports["pack"] == "skipped", reports
    assert full_run.seq_len == SEQ_LEN
    plan = load_plan(out / "pack", overrides["mix"] / "mixture.json")
    windows = {n: read_windows(out / "pack", n) for n in plan.names}
    epochs = [s.epochs for s in plan.sources]
    assert max(epochs) > 1.0 > min(epochs) > 0, epochs  # repetition and downsampling both exercised
    lookup = {row.astype(np.int64).tobytes(): (n, i) for n, w in windows.items() for i, row in enumerate(w)}
    mixture = read_mixture_manifest(overrides["mix"] / "mixture.json")
    return types.SimpleNamespace(full_run=full_run, config=config, out=out, overrides=overrides, pack=out / "pack",
                                 mixture_path=overrides["mix"] / "mixture.json", export=overrides["export"], plan=plan,
                                 windows=windows, lookup=lookup, mixture=mixture)


def identify(run, rows) -> list[tuple[str, int]]:
    """(source, window) of each row; a KeyError means a row that is not a pack window."""
    return [run.lookup[np.asarray(r)[:SEQ_LEN].astype(np.int64).tobytes()] for r in rows]


def check_realises_plan(run, drawn: list[tuple[str, int]], *, slack: int = 0) -> None:
    """Per-source draws equal the plan's (to ``slack``) and mixture.json's weight x draws to within one
    window; no window is drawn more than ceil(epochs) times (whole epochs before repeats)."""
    counts = Counter(name for name, _ in drawn)
    weights = {s["name"]: s["weight"] for s in run.mixture["sources"]}
    for s in run.plan.sources:
        assert abs(counts[s.name] - s.target_windows) <= slack, (s.name, counts[s.name], s.target_windows)
        assert abs(counts[s.name] - weights[s.name] * len(drawn)) <= 1 + slack, (s.name, counts[s.name])
    for (name, _), times in Counter(drawn).items():
        assert times <= int(np.ceil(run.plan.source(name).epochs)) + slack


def export_dir(run, fmt: str) -> Path:
    return run.export / fmt


# -- the stage's folder -----------------------------------------------------------------------------------


def test_stage_exports_verify_and_name_no_temporary_folder(run):
    verify_stage(run.export)
    for fmt in FORMATS:
        verify_stage(export_dir(run, fmt))
    for path in run.export.rglob("*"):
        if path.is_file():
            assert b".tmp-" not in path.read_bytes(), path
    assert f"{run.export}/megatron/books_text_document" in (run.export / "megatron" / "data_path.txt").read_text()


def test_forced_rerun_writes_byte_identical_files(run):
    before = {p.relative_to(run.export): p.read_bytes() for p in run.export.rglob("*")
              if p.is_file() and p.name != "_manifest.json"}
    assert all(run.export / fmt / name in [run.export / p for p in before]
               for fmt, names in CONFIG_FILES.items() for name in names)
    ctx = StageContext(config=run.config, out=run.out, overrides=run.overrides)
    report = run_stage(build_stages()["export"], ctx, force=True)
    assert report.status == "ran"
    after = {p.relative_to(run.export): p.read_bytes() for p in run.export.rglob("*")
             if p.is_file() and p.name != "_manifest.json"}
    assert after.keys() == before.keys()
    assert [p for p in before if before[p] != after[p]] == []


# -- Megatron-Core ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def one_rank_group(tmp: Path):
    """A 1-rank gloo group for the block: Megatron's BlendedDataset needs it to cache its index in
    ``path_to_cache`` (without a cache path GPTDataset writes into the export folder)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp / 'pg'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_megatron_blend_from_the_run(run, tmp_path):
    warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex).*")
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megatron.core.datasets.utils import get_blend_from_list
    from megatron.core.tokenizers import MegatronTokenizer

    out = export_dir(run, "megatron")
    for name, w in run.windows.items():
        ds = IndexedDataset(str(out / f"{name}_text_document"))
        assert np.array_equal(np.stack([ds[i] for i in range(len(ds))]), w)
    per_split = json.loads((out / "data_args.json").read_text())
    assert (out / "data_path.txt").read_text().split() == per_split["train"]
    n = read_manifest(out)["export"]["train_samples"]
    config = GPTDatasetConfig(random_seed=1, sequence_length=SEQ_LEN, blend=get_blend_from_list(per_split["train"]),
                              split="100,0,0", reset_position_ids=False, reset_attention_mask=False,
                              eod_mask_loss=False, path_to_cache=str(tmp_path / "cache"),
                              tokenizer=MegatronTokenizer.from_pretrained(metadata_path={"library": "null"},
                                                                          vocab_size=50257))
    with one_rank_group(tmp_path):
        train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [n, 0, 0], lambda: True, config).build()
    samples = [train[i] for i in range(n)]  # a run with --train-samples n draws these
    drawn = identify(run, [s["tokens"] for s in samples])
    for s, (name, w) in zip(samples[:50], drawn):  # labels are the window shifted by one inside
        assert np.array_equal(s["labels"][:-1].numpy(), run.windows[name][w][1:])
    # Megatron's max-error blend over float weights: within one window of the plan; its per-dataset
    # epochs hold W-1 samples (the last window's label is the next epoch's first token), so +1 repeat
    check_realises_plan(run, drawn, slack=1)


# -- MosaicML Streaming -----------------------------------------------------------------------------------


@pytest.fixture
def streaming(tmp_path):
    """streaming.base without `import streaming` (its __init__ imports torchvision, which is not installed)."""
    old = tempfile.tempdir
    Stream, StreamingDataset = import_streaming(tmp_path)
    yield Stream, StreamingDataset
    tempfile.tempdir = old


def test_mds_streams_from_the_run(run, streaming):
    Stream, StreamingDataset = streaming
    dataset = yaml.safe_load((export_dir(run, "mds") / "streams.yaml").read_text())["train_loader"]["dataset"]
    for name, w in run.windows.items():
        ds = StreamingDataset(local=str(export_dir(run, "mds") / name), shuffle=False, batch_size=1)
        assert np.array_equal(np.stack([ds[i]["tokens"] for i in range(len(ds))]), w)
    ds = StreamingDataset(streams=[Stream(**s) for s in dataset["streams"].values()], shuffle=False, batch_size=1)
    check_realises_plan(run, identify(run, [sample["tokens"] for sample in ds]))


# -- OLMo-core --------------------------------------------------------------------------------------------


def olmo_tokenizer():
    from olmo_core.data import TokenizerConfig

    return TokenizerConfig(vocab_size=50257, eos_token_id=EOS, pad_token_id=EOS)


def olmo_mixture(path: Path):
    from olmo_core.data.source_mixture import SourceMixtureDatasetConfig

    mix = SourceMixtureDatasetConfig.from_dict(yaml.safe_load(path.read_text()))
    mix.render_tables, mix.quiet = False, True
    return mix


def test_olmo_source_mixture_from_the_run(run, tmp_path):
    from olmo_core.data import NumpyFSLDatasetConfig

    mix = olmo_mixture(export_dir(run, "olmo") / "source_mixture.yaml")
    ds = NumpyFSLDatasetConfig.from_src_mix(mix, tokenizer=olmo_tokenizer(), sequence_length=SEQ_LEN, dtype="uint16",
                                            work_dir=str(tmp_path)).build()
    ds.prepare()
    rows = [ds[i]["input_ids"].numpy() for i in range(len(ds))]
    check_realises_plan(run, identify(run, rows))
    assert read_manifest(export_dir(run, "olmo"))["export"]["exact"] is True


def olmo_selected(mix) -> dict[str, int]:
    """Instances per source that olmo-core's own SourceMixtureDatasetConfig.build selects."""
    built = mix.build(npdtype=np.uint16, sequence_length=SEQ_LEN)
    return {o.name: sum(p.tokens for p in o.path_tokens) // SEQ_LEN for o in built.sources}


@pytest.mark.parametrize("batch, max_file_bytes", [(1, None), (64, None), (512, None), (500, None), (64, 40_000)])
def test_olmo_realises_the_stated_counts_at_a_real_batch(run, tmp_path, caplog, batch, max_file_bytes):
    """olmo-core at a global batch of B sequences selects exactly the instances the export's manifest
    states: a whole number of batches, shared by the plan's weights to within one window per source
    and within the epoch caps; the plan itself when N is a multiple of B. 40 kB files = several files
    per source (OLMo's per-file rounding)."""
    options = {"global_batch_size": batch} | ({"max_file_bytes": max_file_bytes} if max_file_bytes else {})
    with caplog.at_level(logging.WARNING):
        summary = export("olmo", run.pack, run.mixture_path, tmp_path / "olmo", **options)
    selected = olmo_selected(olmo_mixture(tmp_path / "olmo" / "source_mixture.yaml"))
    assert selected == summary["instances"]  # the manifest states what OLMo-core does
    plan, targets = run.plan, batch_targets(run.plan, batch)
    total = sum(targets.values())
    assert total % batch == 0 and total - batch < plan.total_windows <= total
    for s in plan.sources:
        if s.target_windows:
            assert abs(targets[s.name] - s.target_windows * total / plan.total_windows) < 1, s.name
            assert targets[s.name] <= s.max_epochs * s.n_windows
    if max_file_bytes is None:  # one file per source: OLMo-core realises the counts exactly
        assert selected == targets
    else:  # per-file rounding that OLMo rebalances across sources: stated and warned about
        assert sum(selected.values()) == total
        assert (selected != targets) == ("OLMo-core realises" in caplog.text)
    assert summary["exact"] == (selected == {s.name: s.target_windows for s in plan.sources if s.target_windows})
    assert ("not a whole number of batches" in caplog.text) == (plan.total_windows % batch != 0)


def test_export_stage_passes_the_global_batch(run, tmp_path):
    config = run_config(run.full_run, global_batch_size=64)
    ctx = StageContext(config=config, out=run.out, overrides={**run.overrides, "export": tmp_path / "export"})
    run_stage(build_stages()["export"], ctx)
    olmo = read_manifest(tmp_path / "export" / "olmo")["export"]
    assert olmo["global_batch_size"] == 64 and sum(olmo["instances"].values()) % 64 == 0
    assert yaml.safe_load((tmp_path / "export" / "olmo" / "source_mixture.yaml").read_text())[
        "global_batch_size"] == 64 * SEQ_LEN
    assert read_manifest(tmp_path / "export" / "datatrove")["export"]["sequences"] % 64 == 0


# -- Hugging Face datasets --------------------------------------------------------------------------------


def test_hf_interleave_from_the_run(run, tmp_path):
    import datasets

    datasets.utils.logging.disable_progress_bar()
    call = json.loads((export_dir(run, "hf") / "interleave.json").read_text())
    parts = [datasets.load_dataset(**call["datasets"][n], cache_dir=str(tmp_path)) for n in call["order"]]
    mixed = datasets.interleave_datasets(parts, **call["interleave_datasets"])
    check_realises_plan(run, identify(run, mixed.with_format("numpy")["input_ids"]))


# -- datatrove / nanotron ---------------------------------------------------------------------------------


def nanoset_index_helper(n_samples: int, weights: np.ndarray, dataset_sizes: list[int]):
    """nanotron's ``build_nanoset_index_helper`` (huggingface/nanotron src/nanotron/data/nanoset.py,
    commit 00708b80, a numba function there), line for line: each sample goes to the dataset with the
    largest error ``weight * max(sample, 1) - drawn``; its sample index is ``drawn % size``."""
    dataset_index = np.empty((n_samples,), dtype="uint")
    dataset_sample_index = np.empty((n_samples,), dtype="long")
    current_samples = np.zeros((len(weights),), dtype="long")
    for sample_idx in range(n_samples):
        errors = weights * max(sample_idx, 1.0) - current_samples
        i = int(np.argmax(errors))
        dataset_index[sample_idx] = i
        dataset_sample_index[sample_idx] = current_samples[i] % dataset_sizes[i]
        current_samples[i] += 1
    return dataset_index, dataset_sample_index


def nanoset_index(dataset_lengths: list[int], weights: list[float], train_split_num_samples: int, seed: int):
    """``Nanoset.build_nanoset_index`` (same file): one epoch of sum(lengths) samples by the helper,
    both indexes shuffled with the same RandomState(seed), the epoch repeated and cut to the samples
    the run trains (``train_steps x global batch``)."""
    samples_per_epoch = sum(dataset_lengths)
    num_epochs = int(train_split_num_samples / samples_per_epoch) + 1
    w = np.asarray(weights, dtype=np.float64)
    dataset_index, sample_index = nanoset_index_helper(samples_per_epoch, w / w.sum(), dataset_lengths)
    np.random.RandomState(seed).shuffle(dataset_index)
    np.random.RandomState(seed).shuffle(sample_index)
    dataset_index = np.concatenate([dataset_index] * num_epochs)[:train_split_num_samples]
    sample_index = np.concatenate([sample_index] * num_epochs)[:train_split_num_samples]
    return dataset_index, sample_index


def test_nanotron_nanoset_from_the_run(run):
    from datatrove.utils.dataset import DatatroveFolderDataset

    out = export_dir(run, "datatrove")
    for name, w in run.windows.items():  # the whole source, in pack order, S+1 tokens a window
        ds = DatatroveFolderDataset(str(out / name), seq_len=SEQ_LEN, token_size=2, filename_pattern="**/*.ds")
        got = np.stack([ds[i]["input_ids"].numpy() for i in range(len(ds))])
        assert np.array_equal(got[:, :SEQ_LEN], w) and np.array_equal(got[:, SEQ_LEN], np.roll(w[:, 0], -1))
    stage = yaml.safe_load((out / "nanotron.yaml").read_text())["data_stages"][0]
    cfg = stage["data"]["dataset"]
    # as Nanoset.__init__ builds them: the folder's own *.ds files (nanotron passes os.path.join(folder,
    # "*.ds"), which this datatrove resolves relative to the folder), shuffle=True permutes the files
    folders = [DatatroveFolderDataset(f, filename_pattern="*.ds", seq_len=SEQ_LEN, recursive=False,
                                      token_size=cfg["token_size_in_bytes"], shuffle=True)
               for f in cfg["dataset_folder"]]
    n = read_manifest(out)["export"]["sequences"]
    assert n == run.plan.total_windows
    dataset_index, sample_index = nanoset_index([len(f) for f in folders], cfg["dataset_weights"], n,
                                                stage["data"]["seed"])
    drawn = identify(run, [folders[d][int(i)]["input_ids"].numpy() for d, i in zip(dataset_index, sample_index)])
    check_realises_plan(run, drawn)
    uses = Counter(drawn)
    for s in run.plan.sources:  # whole epochs before repeats: every window floor or ceil of the epochs
        times = [uses[(s.name, w)] for w in range(s.n_windows)]
        assert int(np.floor(s.epochs)) <= min(times) and max(times) <= int(np.ceil(s.epochs)), s.name
