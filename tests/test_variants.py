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
from mixweave.trainer.sample_data import build_sample_inputs, sample_mixture

CORPUS = Path(__file__).parent / "data" / "corpus"
SOURCES = ["books", "code", "web"]
BATCH = 4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and stay fast on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
def phased(tmp_path_factory):
    """Two phases: ``short`` (S=32, the main pack, 6 steps' budget) then ``long`` (S=64, its own pack
    under pack/phases/long, 3 steps' budget), batch 4."""
    from mixweave.data.tokenizer import load_tokenizer
    from mixweave.retrieval.pack import pack_windows

    root = tmp_path_factory.mktemp("phased")
    limit = 20_000
    sample = build_sample_inputs(root / "base", seq_len=32, corpus_dir=CORPUS, sources=SOURCES,
                                 max_chars_per_source=limit, vocab_size=512, max_epochs=3.0)
    pack = sample.pack_dir
    tok = load_tokenizer(str(root / "base" / "tokenizer" / "tokenizer.json"))
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
