"""Mixture variants (issue 14, items 1 and 3) on the consumer side: the built-in trainer's phase switch
(sequence-length phases trained in order, resumable across the boundary) and the export stage's
``export/<variant>/<format>/`` folders, read by each trainer's own library.

The variants are made here with the pack and mixture functions, without the mix stage's phases:
* trainer: a 512-id BPE pack of the corpus fixture at S=32 (the main pack, phase ``short``) and a
  second pack of the same texts at S=64 under ``pack/phases/long`` (phase ``long``);
* export: the session's ``full_run`` pack (S=256, phase ``p256``) and a second pack at S=128 made
  from the run's ICP order under ``pack/phases/p128`` (phase ``p128``).
Each variant's mixture.json is written by ``build_mixture_manifest`` and listed in a main
mixture.json (schema 2) that :func:`mixture_variants` resolves.
"""

from __future__ import annotations

import json
import re
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from mixweave.data.mixture_manifest import mixture_variants, read_mixture_manifest, write_mixture_manifest
from mixweave.data.windows import read_windows, windows_info, write_pack_artifact
from mixweave.trainer.sample_data import sample_mixture

CORPUS = Path(__file__).parent / "data" / "corpus"
SOURCES = ["books", "code", "web"]
BATCH = 4


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _stats(pack: Path) -> dict:
    info = windows_info(pack)
    return {n: {"n_tokens": int(s["n_windows"]) * info.seq_len, "n_docs": int(s["n_windows"]), "paths": [n]}
            for n, s in sorted(info.sources.items())}


def write_variants(mix_dir: Path, main: dict, variants: list[dict], mixtures: dict[str, dict]) -> Path:
    """``mix_dir/mixture.json`` = ``main`` + the variants list; ``mix_dir/variants/<name>.json`` each."""
    for name, m in mixtures.items():
        write_mixture_manifest(mix_dir / "variants" / f"{name}.json", m)
    entries = [{"mixture": f"variants/{v['name']}.json", **v} for v in variants]
    return write_mixture_manifest(mix_dir / "mixture.json", {**main, "variants": entries})


def _texts(source: str, limit: int) -> list[str]:
    docs, size = [], 0
    for file in sorted((CORPUS / source).glob("*.jsonl")):
        for line in file.read_text(encoding="utf-8").splitlines():
            text = json.loads(line).get("text") or ""
            if size >= limit:
                break
            if text:
                docs.append(text)
                size += len(text)
    return docs


# ------------------------------------------------------------------------------------- trainer
@pytest.fixture(scope="module")
def phased(tiny_sample, tmp_path_factory):
    """Two phases: ``short`` (S=32, a copy of the session's tiny sample pack, 6 steps' budget) then
    ``long`` (S=64, the same texts in its own pack under pack/phases/long, 3 steps' budget), batch 4."""
    from mixweave.data.tokenizer import load_tokenizer
    from mixweave.retrieval.pack import pack_windows

    root = tmp_path_factory.mktemp("phased")
    limit = 20_000  # tiny_sample's characters a source
    pack = Path(shutil.copytree(tiny_sample.pack_dir, root / "pack"))
    tok = load_tokenizer(windows_info(pack).tokenizer["path"])
    long_windows = {}
    for i, name in enumerate(SOURCES):  # the same texts as build_sample_inputs, cut at S=64
        ids = tok.encode_batch(_texts(name, limit))
        long_windows[name] = pack_windows(ids, np.arange(len(ids)), seq_len=64, eos_id=tok.eos_id, plus_one=False,
                                          seed=i, dtype=np.uint16).windows
    write_pack_artifact(pack / "phases" / "long", long_windows, seq_len=64, plus_one=False, tokenizer=tok.info)
    budgets = {"short": 6 * BATCH * 32, "long": 3 * BATCH * 64}
    mixtures = {
        "short": sample_mixture(_stats(pack), budgets["short"], weights=None, max_epochs=3.0, seq_len=32,
                                tokenizer=tok.info, seed=0),
        "long": sample_mixture(_stats(pack / "phases" / "long"), budgets["long"], weights=None, max_epochs=3.0,
                               seq_len=64, tokenizer=tok.info, seed=0)}
    main = sample_mixture(_stats(pack), sum(budgets.values()), weights=None, max_epochs=3.0, seq_len=32,
                          tokenizer=tok.info, seed=0)
    mixture = write_variants(root / "mix", main, [
        {"name": "short", "kind": "phase", "pack": None, "seq_len": 32, "budget_tokens": budgets["short"]},
        {"name": "long", "kind": "phase", "pack": "phases/long", "seq_len": 64, "budget_tokens": budgets["long"]},
    ], mixtures)
    return types.SimpleNamespace(root=root, pack=pack, mixture=mixture, budgets=budgets,
                                 variants={v.name: v for v in mixture_variants(mixture, pack_root=pack)})


def test_phase_steps_share_the_run_by_token_budget():
    from mixweave.trainer.train import phase_steps

    assert phase_steps([768, 768], [32, 64], 4, None) == ([6, 3], 9)  # quotas 6 and 3 steps
    assert phase_steps([768, 768], [32, 64], 4, 5) == ([3, 2], 5)  # 3.33, 1.67
    assert phase_steps([1e6, 10], [32, 64], 4, 10) == ([9, 1], 10)  # a positive budget gets a step ...
    assert phase_steps([1e6, 10], [32, 64], 4, 1) == ([1, 0], 1)  # ... while the steps allow
    rng = np.random.default_rng(0)
    for _ in range(200):  # against the definition: sum = steps, within one of the exact quota
        k = int(rng.integers(1, 5))
        budgets, lens = rng.uniform(1, 1e5, k), rng.choice([32, 64, 128], k)
        steps = int(rng.integers(k, 50))
        got, total = phase_steps(budgets.tolist(), lens.tolist(), 8, steps)
        exact = budgets / lens / (budgets / lens).sum() * steps
        assert total == steps == sum(got) and min(got) >= 1
        if min(exact) >= 1:
            assert np.all(np.abs(np.array(got) - exact) < 1)


def _holdout_plan(variant, n):
    from mixweave.trainer.plan import load_plan

    info = windows_info(variant.pack_dir)
    holdout = {s: min(n, int(v["n_windows"]) // 10) for s, v in info.sources.items()}
    return load_plan(variant.pack_dir, variant.mixture_path, holdout=holdout), holdout


def test_phase_switch_trains_each_phase_at_its_seq_len(phased, tmp_path, monkeypatch):
    from mixweave.trainer.dataset import MixtureLoader, PackDataset
    from mixweave.trainer.evaluate import window_loss
    from mixweave.trainer.train import lr_at, train

    seen: list[torch.Tensor] = []
    next_batch = MixtureLoader.next_batch
    monkeypatch.setattr(MixtureLoader, "next_batch", lambda self: seen.append(next_batch(self)) or seen[-1])
    result = train(phased.pack, phased.mixture, tmp_path / "run", depth=1, batch_size=BATCH, lr=3e-3, log_interval=2,
                   holdout_windows=2, device="cpu")
    assert result.finished and result.steps == 9 and len(result.losses) == 9
    assert [(p["name"], p["seq_len"], p["steps"], p["first_step"]) for p in result.phases] == \
        [("short", 32, 6, 1), ("long", 64, 3, 7)]
    assert result.model.cfg.seq_len == 64  # built once, for the largest phase (its rope cache)
    assert [tuple(b.shape) for b in seen] == [(BATCH, 32)] * 6 + [(BATCH, 64)] * 3
    # brute force: each phase's batches are its own loader's over its own plan, from position 0
    for name, batches in (("short", seen[:6]), ("long", seen[6:])):
        plan, _ = _holdout_plan(phased.variants[name], 2)
        loader = MixtureLoader(PackDataset(phased.variants[name].pack_dir, plan.names), plan, BATCH)
        for b in batches:
            assert torch.equal(b, loader.next_batch())
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "loss" in m]
    assert [(m["step"], m["phase"]) for m in steps] == [(2, "short"), (4, "short"), (6, "short"), (8, "long"),
                                                         (9, "long")]
    cfg = types.SimpleNamespace(lr=3e-3, min_lr_ratio=0.1)
    assert [m["lr"] for m in steps] == [lr_at(s["step"], cfg, 9, 1) for s in steps]  # one schedule over the run
    assert [(m["step"], m["phase"]) for m in metrics if m.get("phase_end")] == [(6, "short"), (9, "long")]
    ev = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert {n: (e["step"], e["seq_len"]) for n, e in ev["phases"].items()} == {"short": (6, 32), "long": (9, 64)}
    _, holdout = _holdout_plan(phased.variants["long"], 2)
    data = PackDataset(phased.variants["long"].pack_dir, SOURCES)
    for name in SOURCES:  # the last phase's eval is the final model on its held-out S=64 windows
        want = window_loss(result.model, data.source_windows(name)[-holdout[name]:], torch.device("cpu"), 16, None)
        assert ev["phases"]["long"]["sources"][name] == pytest.approx(want, rel=1e-6)
    assert ev["sources"] == ev["phases"]["long"]["sources"]
    manifest = json.loads((tmp_path / "run" / "_manifest.json").read_text())
    assert {"mixture:long", "pack:long", "mixture:short", "pack:short"} == set(manifest["inputs"])


def test_killed_phased_run_resumes_inside_the_right_phase(phased, tmp_path):
    from mixweave.trainer.train import train

    common = dict(depth=1, batch_size=BATCH, lr=3e-3, log_interval=1, holdout_windows=2, device="cpu")
    full = train(phased.pack, phased.mixture, tmp_path / "full", **common)
    a = torch.load(full.checkpoint / "model.pt", weights_only=True)
    full_eval = json.loads((tmp_path / "full" / "eval.json").read_text())
    for stop, phase, position in ((4, "short", 16), (6, "short", 24), (7, "long", 4)):  # inside, at, past the switch
        out = tmp_path / f"stop{stop}"
        part = train(phased.pack, phased.mixture, out, stop_after=stop, **common)
        meta = json.loads((part.checkpoint / "meta.json").read_text())
        assert (meta["step"], meta["phase"], meta["sampler"]["position"]) == (stop, phase, position)
        rest = train(phased.pack, phased.mixture, out, **common)
        assert rest.resumed_from == stop and rest.finished
        assert part.losses + rest.losses == full.losses, stop  # bit-identical on CPU
        b = torch.load(rest.checkpoint / "model.pt", weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a), stop
        assert json.loads((out / "eval.json").read_text()) == full_eval, stop


def test_train_stage_work_folder_follows_the_variants(phased, tmp_path):
    from mixweave.pipeline.stages.train import train_work_folder
    from mixweave.trainer.config import TrainConfig

    cfg = TrainConfig(depth=1)
    before = train_work_folder(tmp_path / "w", cfg, phased.mixture, phased.pack)
    copy = tmp_path / "mix"
    shutil.copytree(phased.mixture.parent, copy)
    long = json.loads((copy / "variants" / "long.json").read_text())
    write_mixture_manifest(copy / "variants" / "long.json", {**long, "seed": 1})  # only a variant changed
    assert train_work_folder(tmp_path / "w", cfg, copy / "mixture.json", phased.pack).name != before.name


# ------------------------------------------------------------------------------------- exports
FULL_S, PHASE_S = 256, 128


def repack(run: Path, config, dest: Path, seq_len: int) -> Path:
    """The run's ICP order of every source cut into windows of ``seq_len`` (the pack stage's local
    path: tokenize in order, pack_windows, spans mapped to source documents), as a pack artifact."""
    import pyarrow as pa

    from mixweave.data.artifacts import load_order, read_source_texts
    from mixweave.data.manifest import MANIFEST_NAME, atomic_stage_dir, build_manifest, write_json_atomic
    from mixweave.data.tokenizer import load_tokenizer
    from mixweave.data.windows import windows_section, write_windows_files
    from mixweave.retrieval import pack_windows, spans_table
    from mixweave.retrieval.pack import source_seed

    o = config.order
    tok = load_tokenizer(config.tokenizer.path, config.tokenizer.pattern, o.sink_token)
    per_source = {}
    with atomic_stage_dir(dest) as tmp:
        for source in sorted(windows_info(run / "pack").sources):
            order = load_order(run / "order", source)
            texts = read_source_texts(run / "ingest", source)
            ids = tok.encode_batch([texts[i] for i in order])
            packed = pack_windows(ids, np.arange(len(ids)), seq_len=seq_len, eos_id=tok.eos_id, plus_one=o.plus_one,
                                  shuffle=o.shuffle, seed=source_seed(config.seed, source),
                                  dtype=np.dtype(tok.info["dtype"]), sink_id=tok.sink_id)
            spans = spans_table(packed)
            doc = pa.array(order[np.asarray(spans.column("doc").to_numpy())], pa.int64())
            spans = spans.set_column(spans.schema.get_field_index("doc"), "doc", doc)
            per_source[source] = {"n_windows": packed.n_windows, "n_tokens": packed.n_windows * seq_len,
                                  "files": write_windows_files(tmp, source, packed.windows, spans),
                                  "dropped_tokens": int(packed.dropped_tokens)}
        manifest = build_manifest(stage="pack", stage_version=1, config={"seq_len": seq_len, "plus_one": o.plus_one},
                                  fingerprint_value="", inputs={}, root=tmp,
                                  extra={"windows": windows_section(seq_len, o.plus_one, tok.info, per_source)})
        write_json_atomic(tmp / MANIFEST_NAME, manifest)
    return dest


@pytest.fixture(scope="module")
def variant_export(full_run, tmp_path_factory):
    """The export stage (all formats) over a copy of the full run's pack + mix whose mixture.json lists
    two phases: ``p128`` (its own pack at S=128 from the run's ICP order, half the budget) and
    ``p256`` (the main pack, the run's own mixture)."""
    from mixweave.pipeline.export import FORMATS
    from mixweave.pipeline.runner import StageContext, run_stage
    from mixweave.pipeline.stages import build_stages

    root = tmp_path_factory.mktemp("variant_export")
    run = full_run.out
    pack, mix = root / "pack", root / "mix"
    shutil.copytree(run / "pack", pack)
    shutil.copytree(run / "mix", mix)
    repack(run, full_run.config, pack / "phases" / "p128", PHASE_S)
    main = read_mixture_manifest(run / "mix" / "mixture.json")
    weights = {s["name"]: s["weight"] for s in main["sources"]}
    half = float(main["budget_tokens"]) / 2
    short = sample_mixture(_stats(pack / "phases" / "p128"), half, weights=weights, max_epochs=4.0, seq_len=PHASE_S,
                           tokenizer=windows_info(pack).tokenizer, seed=main["seed"])
    mixture = write_variants(mix, main, [
        {"name": "p128", "kind": "phase", "pack": "phases/p128", "seq_len": PHASE_S, "budget_tokens": half},
        {"name": "p256", "kind": "phase", "pack": None, "seq_len": FULL_S, "budget_tokens": main["budget_tokens"]},
    ], {"p128": short, "p256": main})
    overrides = {"pack": pack, "mix": mix, "export": root / "export"}
    config = full_run.config_for(run, export={"formats": list(FORMATS)})
    report = run_stage(build_stages()["export"], StageContext(config=config, out=run, overrides=overrides))
    assert report.status == "ran"
    variants = {v.name: v for v in mixture_variants(mixture, pack_root=pack)}
    windows = {name: {n: read_windows(v.pack_dir, n) for n in windows_info(v.pack_dir).sources}
               for name, v in variants.items()}
    return types.SimpleNamespace(root=root, export=root / "export", variants=variants, windows=windows,
                                 mixture=mixture, formats=FORMATS)


def _lookup(windows: dict[str, np.ndarray]) -> dict[bytes, tuple[str, int]]:
    return {row.astype(np.int64).tobytes(): (name, i) for name, w in windows.items() for i, row in enumerate(w)}


def _identify(lookup, rows, S) -> list[tuple[str, int]]:
    return [lookup[np.asarray(r)[:S].astype(np.int64).tobytes()] for r in rows]


def _realises(plan, drawn: list[tuple[str, int]], slack: int = 0) -> None:
    from collections import Counter

    counts = Counter(name for name, _ in drawn)
    for s in plan.sources:
        assert abs(counts[s.name] - s.target_windows) <= slack, (s.name, counts[s.name], s.target_windows)


def test_every_variant_is_exported_in_every_format_naming_the_final_folder(variant_export):
    from mixweave.data.manifest import read_manifest, verify_stage
    from mixweave.trainer.plan import load_plan
    from test_run_exports import CONFIG_FILES

    ve = variant_export
    stage = verify_stage(ve.export)
    assert set(stage["exports"]) == set(ve.formats)  # the main export stays
    by_variant = stage["exports_by_variant"]
    assert set(by_variant) == {"p128", "p256"} and stage["counts"]["variants"] == 2
    for name, v in ve.variants.items():
        assert by_variant[name]["seq_len"] == v.seq_len and set(by_variant[name]["formats"]) == set(ve.formats)
        plan = load_plan(v.pack_dir, v.mixture_path).to_dict()
        for fmt in ve.formats:
            folder = ve.export / name / fmt
            verify_stage(folder)
            summary = read_manifest(folder)["export"]
            assert summary["out"] == str(folder) and summary["plan"] == plan
            for config_file in CONFIG_FILES[fmt]:
                assert (folder / config_file).is_file(), (name, fmt, config_file)
    # every path that a trainer config names exists after the stage (no temporary folder anywhere)
    named = 0
    for path in ve.export.rglob("*"):
        if not path.is_file() or path.suffix not in (".txt", ".json", ".yaml"):
            continue
        text = path.read_text()
        assert ".tmp-" not in text, path
        for hit in re.findall(re.escape(str(ve.export)) + r"[^\s\"',\]]*", text):
            named += 1
            assert Path(hit).exists() or Path(hit + ".bin").exists(), (path, hit)
    assert named > 100
    assert f"{ve.export}/p128/megatron/code_text_document" in (ve.export / "p128" / "megatron" / "data_path.txt").read_text()
    # p256 is the run's own mixture over the main pack: its files are the main export's, bar the folder
    # that the trainer configs name (so the library reads below cover p128, the pack of its own)
    for fmt in ve.formats:
        main, p256 = ve.export / fmt, ve.export / "p256" / fmt
        files = sorted(p.relative_to(main) for p in main.rglob("*") if p.is_file() and p.name != "_manifest.json")
        assert files == sorted(p.relative_to(p256) for p in p256.rglob("*")
                               if p.is_file() and p.name != "_manifest.json") and files
        for rel in files:
            got = (p256 / rel).read_bytes().replace(str(p256).encode(), str(main).encode())
            assert got == (main / rel).read_bytes(), (fmt, rel)


def read_token_exact(root: Path, seq_len: int, windows: dict[str, np.ndarray], tmp: Path) -> None:
    """One variant's export folder ``root`` (export/<variant>) read by megatron-core, olmo-core and
    datatrove: every source's windows, token-exact against the variant's pack."""
    from datatrove.utils.dataset import DatatroveFolderDataset
    from olmo_core.data import NumpyFSLDatasetConfig

    from mixweave.data.manifest import read_manifest
    from test_export import DS_FILES, _megatron
    from test_run_exports import olmo_tokenizer

    mc, S = _megatron(), seq_len
    prefixes = read_manifest(root / "megatron")["export"]["prefixes"]
    assert set(prefixes) == set(windows)
    for source, prefix in prefixes.items():
        ds = mc.IndexedDataset(prefix)
        assert (ds.sequence_lengths == S).all()
        assert np.array_equal(np.stack([ds[i] for i in range(len(ds))]), windows[source]), (root, source)
    for source, paths in read_manifest(root / "olmo")["export"]["paths"].items():
        ds = NumpyFSLDatasetConfig(tokenizer=olmo_tokenizer(), paths=paths, sequence_length=S, dtype="uint16",
                                   work_dir=str(tmp / "olmo" / source)).build()
        ds.prepare()
        got = np.stack([ds[i]["input_ids"].numpy() for i in range(len(ds))])
        assert np.array_equal(got, windows[source]), (root, source)
    for source, w in windows.items():
        ds = DatatroveFolderDataset(str(root / "datatrove" / source), seq_len=S, token_size=2, shuffle=False,
                                    filename_pattern=DS_FILES)
        got = np.stack([ds[i]["input_ids"].numpy() for i in range(len(ds))])
        assert np.array_equal(got[:, :S], w), (root, source)


def read_realised(root: Path, plan, windows: dict[str, np.ndarray], tmp: Path) -> None:
    """One variant's mixture-level configs (HF interleave, MDS streams, OLMo-core source mixture),
    read by the libraries, draw the variant's planned windows of its own pack (OLMo-core to one)."""
    import tempfile

    import datasets
    import yaml
    from olmo_core.data import NumpyFSLDatasetConfig

    from streaming_import import import_streaming
    from test_run_exports import olmo_mixture, olmo_tokenizer

    datasets.utils.logging.disable_progress_bar()
    S, lookup = plan.seq_len, _lookup(windows)
    call = json.loads((root / "hf" / "interleave.json").read_text())
    parts = [datasets.load_dataset(**call["datasets"][n], cache_dir=str(tmp / "hf")) for n in call["order"]]
    mixed = datasets.interleave_datasets(parts, **call["interleave_datasets"])
    _realises(plan, _identify(lookup, mixed.with_format("numpy")["input_ids"], S))
    old = tempfile.tempdir
    try:
        Stream, StreamingDataset = import_streaming(tmp / "streaming")
        dataset = yaml.safe_load((root / "mds" / "streams.yaml").read_text())["train_loader"]["dataset"]
        assert dataset["max_seq_len"] == S
        ds = StreamingDataset(streams=[Stream(**s) for s in dataset["streams"].values()], shuffle=False, batch_size=1)
        _realises(plan, _identify(lookup, [sample["tokens"] for sample in ds], S))
    finally:
        tempfile.tempdir = old
    mix = olmo_mixture(root / "olmo" / "source_mixture.yaml")
    ds = NumpyFSLDatasetConfig.from_src_mix(mix, tokenizer=olmo_tokenizer(), sequence_length=S, dtype="uint16",
                                            work_dir=str(tmp / "olmo_mix")).build()
    ds.prepare()
    _realises(plan, _identify(lookup, [ds[i]["input_ids"].numpy() for i in range(len(ds))], S), slack=1)


def test_variant_exports_are_read_token_exact_by_each_trainers_library(variant_export, tmp_path):
    v = variant_export.variants["p128"]
    read_token_exact(variant_export.export / "p128", v.seq_len, variant_export.windows["p128"], tmp_path)


def test_variant_mixtures_are_realised_by_the_trainers_samplers(variant_export, tmp_path):
    from mixweave.trainer.plan import load_plan

    v = variant_export.variants["p128"]
    read_realised(variant_export.export / "p128", load_plan(v.pack_dir, v.mixture_path), variant_export.windows["p128"],
                  tmp_path)


def test_export_cli_variant_flag(phased, tmp_path, capsys):
    from cli_helpers import run_cli

    base = ["export", "--format", "megatron", "--format", "olmo", "--pack", str(phased.pack), "--mixture",
            str(phased.mixture)]
    code, out, err = run_cli([*base, "--out", str(tmp_path / "one"), "--variant", "long"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["long"]
    long = phased.variants["long"]
    for name in SOURCES:  # the phase's own windows at S=64, token-exact
        got = np.fromfile(tmp_path / "one" / "long" / "megatron" / f"{name}_text_document.bin", np.uint16)
        assert np.array_equal(got.reshape(-1, 64), read_windows(long.pack_dir, name))
    code, out, err = run_cli([*base, "--out", str(tmp_path / "all"), "--variant", "all"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["long", "megatron", "olmo", "short"]
    assert sorted(p.name for p in (tmp_path / "all" / "short").iterdir()) == ["megatron", "olmo"]
    code, out, err = run_cli([*base, "--out", str(tmp_path / "bad"), "--variant", "medium"], capsys)
    assert code != 0 and "no variant 'medium'" in err and "short, long" in err and "Traceback" not in err


def test_report_has_a_variants_section(variant_export, phased):
    from mixweave.pipeline.report import variants_section

    mixture = read_mixture_manifest(variant_export.mixture)
    export_manifest = json.loads((variant_export.export / "_manifest.json").read_text())
    text = variants_section(mixture, variant_export.mixture.parent, export_manifest)
    assert text.startswith("<h2>Variants</h2>") and "p128 → p256" in text
    rows = re.findall(r"<tr><td>(p\d+)</td><td>phase</td><td>(\d+)</td>", text)
    assert rows == [("p128", "128"), ("p256", "256")]
    assert "export/p128/ (datatrove, hf, mds, megatron, olmo)" in text
    weights = {s["name"]: s["weight"] for s in read_mixture_manifest(variant_export.variants["p128"].mixture_path)["sources"]}
    assert len(re.findall(r"<th>", text)) == 5 + len(weights)  # variant, kind, seq_len, budget, a source each, exports
    assert variants_section({**mixture, "variants": []}, variant_export.mixture.parent, export_manifest) == ""
    assert "export/" not in variants_section(read_mixture_manifest(phased.mixture), phased.mixture.parent, None)


def test_train_cli_reports_each_phase(phased, tmp_path, capsys):
    from cli_helpers import run_cli

    code, out, err = run_cli(["train", "--pack", str(phased.pack), "--mixture", str(phased.mixture), "--out",
                              str(tmp_path / "run"), "--depth", "1", "--batch-size", str(BATCH), "--holdout-windows",
                              "2", "--device", "cpu"], capsys)
    assert code == 0, err
    lines = [x.split() for x in out.splitlines() if x.strip().startswith("phase ")]
    assert [(x[1], x[3], x[5].rstrip(",")) for x in lines] == [("short", "32", "1..6"), ("long", "64", "7..9")]
