"""The trainer: window plan + sampler (targets, caps, determinism, resume, sharding), the GPT, the
training loop (loss falls on real text, exact resume), evaluation, ablation utility, CLI.

Real text from the corpus fixture, tokenised with a 512-id byte-level BPE trained on it, so CPU
steps take milliseconds. GPU tests (bf16 autocast + torch.compile) are marked ``gpu``."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mixweave.errors import ConfigError, InputError
from mixweave.trainer.plan import MixturePlan, SourcePlan, hamilton, load_plan
from mixweave.trainer.sampler import MixtureOrder, MixtureSampler

S = 32


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def small(sample_inputs):
    """tests/conftest.py's sample inputs with 40,000 characters a source and epochs capped at 3."""
    return sample_inputs(max_chars_per_source=40_000, max_epochs=3.0)


def _plan(n_windows, targets, seed=7, caps=None) -> MixturePlan:
    caps = caps or [None] * len(targets)
    sources = tuple(SourcePlan(name=f"s{i}", n_windows=w, requested_tokens=float(t * S), target_windows=t,
                               weight=t / sum(targets), max_epochs=c)
                    for i, (w, t, c) in enumerate(zip(n_windows, targets, caps)))
    return MixturePlan(seq_len=S, plus_one=False, tokenizer={"vocab_size": 512, "dtype": "uint16"}, seed=seed,
                       budget_tokens=float(sum(targets) * S), sources=sources)


# -- plan and sampler --------------------------------------------------------------------------------------


def test_hamilton_rounds_to_the_total_within_one():
    q = np.array([10.4, 20.35, 5.25, 0.0])
    x = hamilton(q, 36)
    assert x.sum() == 36 and np.all(np.abs(x - q) < 1)


def test_sampler_meets_targets_exactly_with_epochs_within_cap():
    plan = _plan([1000, 300, 50], [600, 450, 150], caps=[1.0, 2.0, 3.0])
    order = MixtureOrder(plan, chunk=128)
    src, win = order.lookup(np.arange(len(order)))
    counts = np.bincount(src, minlength=3)
    assert counts.tolist() == [600, 450, 150]  # target tokens met exactly (well within 1%)
    for i, (w, t) in enumerate(zip(plan.n_windows, plan.target_windows)):
        uses = np.bincount(win[src == i], minlength=w)
        assert uses.max() <= np.ceil(t / w) and uses.min() >= t // w  # epochs within cap, whole epochs first
        assert uses.max() <= plan.sources[i].max_epochs


def test_sampler_interleaves_sources_throughout():
    plan = _plan([1000, 1000], [900, 300])
    src, _ = MixtureOrder(plan, chunk=64).lookup(np.arange(1200))
    for lo in range(0, 1200, 300):  # every quarter of the run holds ~3:1 (hypergeometric: sd ~ 7.5)
        assert abs((src[lo:lo + 300] == 1).sum() - 75) < 40
    assert len(set(np.diff(np.flatnonzero(src == 1)))) > 3  # not a fixed round-robin stride


def test_sampler_is_deterministic_by_seed():
    a = MixtureOrder(_plan([100, 40], [120, 60], seed=1), chunk=32).lookup(np.arange(180))
    b = MixtureOrder(_plan([100, 40], [120, 60], seed=1), chunk=32).lookup(np.arange(180))
    c = MixtureOrder(_plan([100, 40], [120, 60], seed=2), chunk=32).lookup(np.arange(180))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_sampler_ranks_are_disjoint_and_cover_the_order():
    plan = _plan([100, 40], [150, 50])
    order = MixtureOrder(plan, chunk=16)
    offsets = np.array([0, 100])
    single = list(MixtureSampler(order, offsets))
    world = 3
    shards = [list(MixtureSampler(MixtureOrder(plan, chunk=16), offsets, rank=r, world_size=world))
              for r in range(world)]
    assert sum(len(s) for s in shards) == len(single) == 200
    assert [shards[p % world][p // world] for p in range(200)] == single  # position p -> rank p % world
    positions = [set(range(r, 200, world)) for r in range(world)]
    assert not set.intersection(*positions)
    with pytest.raises(InputError):
        MixtureSampler(order, offsets, rank=3, world_size=3)


def test_sampler_state_resumes_exactly():
    plan = _plan([100, 40], [150, 50])
    offsets = np.array([0, 100])
    full = MixtureSampler(MixtureOrder(plan, chunk=16), offsets, world_size=2, rank=1)
    first = full.take(37)
    state = full.state_dict()
    rest = full.take(40)
    again = MixtureSampler(MixtureOrder(plan, chunk=16), offsets, world_size=2, rank=1)
    again.load_state_dict(json.loads(json.dumps(state)))
    assert np.array_equal(again.take(40), rest) and len(first) == 37
    other = MixtureSampler(MixtureOrder(_plan([100, 40], [150, 50], seed=99)), offsets)
    with pytest.raises(InputError, match="another plan"):
        other.load_state_dict(state)


def test_positions_past_the_plan_start_a_new_pass():
    plan = _plan([30, 20], [45, 15])
    src, _ = MixtureOrder(plan, chunk=8).lookup(np.arange(180))
    for p in range(3):
        assert np.bincount(src[p * 60:(p + 1) * 60]).tolist() == [45, 15]
    assert not np.array_equal(src[:60], src[60:120])


def test_plan_from_pack_and_mixture(small):
    plan = load_plan(small.pack_dir, small.mixture_path, holdout={"books": 5})
    mixture = json.loads(Path(small.mixture_path).read_text())
    assert plan.total_windows == round(mixture["budget_tokens"] / S)
    assert plan.source("books").n_windows == small.tokens["books"] // S - 5
    d = plan.to_dict()
    assert set(d["sources"]) == {"books", "code", "web"} and d["mixture_sha256"] and d["pack_sha256"]


def test_dataset_and_loader_serve_pack_windows(small):
    from mixweave.data.windows import read_windows
    from mixweave.trainer.dataset import MixtureLoader, PackDataset

    ds = PackDataset(small.pack_dir)
    plan = load_plan(small.pack_dir, small.mixture_path)
    loader = MixtureLoader(ds, plan, batch_size=4)
    batch = loader.next_batch()
    assert batch.shape == (4, S) and batch.dtype == torch.int64
    src, win = loader.order.lookup(np.arange(4))
    for row, (i, w) in enumerate(zip(src, win)):
        assert np.array_equal(batch[row].numpy(), read_windows(small.pack_dir, plan.names[i])[w])
    assert loader.state_dict()["position"] == 4
    assert ds[0].shape == (S,) and ds.__getitems__([0, 1]).shape == (2, S)


# -- model ----------------------------------------------------------------------------------------------------


def test_depth_dial_sizes_the_model():
    from mixweave.trainer.model import GPT, GPTConfig

    with torch.device("meta"):
        gpt2 = GPT(GPTConfig.from_depth(12, vocab_size=50257, seq_len=1024))
    assert 123e6 < gpt2.num_params() < 126e6  # GPT-2 small, tied embeddings
    tiny = GPT(GPTConfig.from_depth(1, vocab_size=100, seq_len=16))
    x = torch.randint(0, 100, (2, 17))
    assert tiny(x).shape == (2, 17, 128)  # vocabulary padded to a multiple of 64
    assert tiny.wte.weight is not None and tiny.flops_per_token() > 6 * tiny.num_params()
    with pytest.raises(ConfigError):
        GPTConfig.from_depth(0, vocab_size=100, seq_len=16)


def test_attention_is_causal_and_rope_is_relative():
    from mixweave.trainer.model import GPT, GPTConfig, apply_rope, rope_cache

    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(1, vocab_size=64, seq_len=16)).eval()
    x = torch.randint(0, 64, (1, 12))
    y = x.clone()
    y[0, 8:] = (y[0, 8:] + 1) % 64
    assert torch.allclose(model(x)[0, :8], model(y)[0, :8], atol=1e-6)  # the future cannot leak back
    cos, sin = rope_cache(16, 8, 10000.0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    score = lambda i, j: (apply_rope(q, cos[i:i + 1], sin[i:i + 1]) * apply_rope(k, cos[j:j + 1], sin[j:j + 1])).sum()
    assert torch.allclose(score(5, 2), score(9, 6), atol=1e-5)


# -- training loop --------------------------------------------------------------------------------------------


def test_training_loss_falls_on_real_text(small, tmp_path, caplog):
    from mixweave.trainer.train import train

    caplog.set_level(logging.INFO, logger="mixweave.trainer.train")
    result = train(small.pack_dir, small.mixture_path, tmp_path / "run", depth=2, steps=40, batch_size=8,
                   lr=3e-3, log_interval=10, benchmarks=str(small.benchmarks_path), holdout_windows=8)
    assert result.finished and result.step == 40 and len(result.losses) == 40
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5]) - 0.5
    assert all(np.isfinite(result.losses))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert len(lines) == 4 and "loss" in lines[0] and "tok/s" in lines[0] and "MFU" in lines[0]
    ev = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert set(ev["sources"]) == {"books", "code", "web"} and {"humaneval", "mmlu"} <= set(ev["benchmarks"])
    assert all(np.isfinite(v) and v < np.log(512) for v in ev["sources"].values())
    meta = json.loads((result.checkpoint / "meta.json").read_text())
    assert meta["mixture_sha256"] == load_plan(small.pack_dir, small.mixture_path).mixture_sha256
    assert meta["sampler"]["position"] == 40 * 8 and meta["config"]["depth"] == 2
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [10, 20, 30, 40]
    from mixweave.data.manifest import verify_stage

    assert verify_stage(tmp_path / "run")["stage"] == "train"


def test_resume_matches_the_uninterrupted_run_exactly(small, tmp_path):
    from mixweave.trainer.train import train

    common = dict(depth=1, steps=8, batch_size=4, lr=3e-3, log_interval=4, holdout_windows=0)
    full = train(small.pack_dir, small.mixture_path, tmp_path / "full", **common)
    part = train(small.pack_dir, small.mixture_path, tmp_path / "part", stop_after=3, **common)
    assert part.step == 3 and not part.finished and not (tmp_path / "part" / "_manifest.json").exists()
    rest = train(small.pack_dir, small.mixture_path, tmp_path / "part", **common)
    assert rest.resumed_from == 3 and rest.first_step == 4 and rest.finished
    assert part.losses + rest.losses == full.losses  # bit-identical on CPU
    a = torch.load(full.checkpoint / "model.pt", weights_only=True)
    b = torch.load(rest.checkpoint / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="lr"):
        train(small.pack_dir, small.mixture_path, tmp_path / "part", **{**common, "lr": 1e-3})


class HostReads:
    """Counts reads of tensor values into Python made directly by code in ``filename``: scalar reads
    (``float(t)``, ``t.item()``, seen by the dispatcher as ``_local_scalar_dense``) and ``t.tolist()``."""

    PLUMBING = ("torch/_dynamo/", "torch/_compile.py", "torch/utils/_python_dispatch.py")

    def __init__(self, filename: str):
        self.filename, self.count = filename, 0

    def _called_from_target(self, frame) -> bool:
        while frame is not None and any(part in frame.f_code.co_filename for part in self.PLUMBING):
            frame = frame.f_back
        return frame is not None and frame.f_code.co_filename == self.filename

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        probe = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func is torch.ops.aten._local_scalar_dense.default and probe._called_from_target(sys._getframe(1)):
                    probe.count += 1
                return func(*args, **(kwargs or {}))

        self.tolist = torch.Tensor.tolist

        def counted_tolist(tensor):
            if probe._called_from_target(sys._getframe(1)):
                probe.count += 1
            return probe.tolist(tensor)

        torch.Tensor.tolist = counted_tolist
        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)
        torch.Tensor.tolist = self.tolist


def test_host_read_counter_sees_float_item_and_tolist():
    def reads(t):
        return float(t.sum()), t[0].item(), t.tolist()

    with HostReads(__file__.replace("test_trainer.py", "nothing.py")) as other:
        reads(torch.ones(3))
    with HostReads(reads.__code__.co_filename) as here:
        reads(torch.ones(3))
    assert other.count == 0 and here.count == 3


def test_losses_reach_the_host_once_per_log_interval(small, tmp_path, monkeypatch):
    from mixweave.trainer import train as train_module

    common = dict(depth=1, steps=6, batch_size=2, grad_accum=2, lr=3e-3, holdout_windows=0)
    micro: list[torch.Tensor] = []
    real_loss = train_module._loss

    def recorded_loss(model, batch):
        loss = real_loss(model, batch)
        micro.append(loss.detach().clone())
        return loss

    monkeypatch.setattr(train_module, "_loss", recorded_loss)
    with HostReads(train_module.__file__) as reads:
        every3 = train_module.train(small.pack_dir, small.mixture_path, tmp_path / "k3", log_interval=3, **common)
    assert reads.count == 2  # steps 3 and 6; the old loop read 12 micro-losses
    # the step loss is what adding each micro-step's float gave before: 0.0 + float(l1 / 2) + float(l2 / 2)
    before = [0.0 + float(micro[2 * i] / 2) + float(micro[2 * i + 1] / 2) for i in range(6)]
    assert every3.losses == before

    every1 = train_module.train(small.pack_dir, small.mixture_path, tmp_path / "k1", log_interval=1, **common)
    assert every1.losses == every3.losses
    logged1 = [json.loads(line)["loss"] for line in (tmp_path / "k1" / "metrics.jsonl").read_text().splitlines()]
    logged3 = [json.loads(line)["loss"] for line in (tmp_path / "k3" / "metrics.jsonl").read_text().splitlines()]
    assert logged1 == every1.losses and logged3 == [every3.losses[2], every3.losses[5]]


def test_training_logs_progress_with_rate_and_eta(small, tmp_path, caplog, monkeypatch):
    from mixweave.data import progress
    from mixweave.trainer.train import train

    monkeypatch.setattr(progress, "DEFAULT_INTERVAL", 0.0)
    caplog.set_level(logging.INFO, logger="mixweave.trainer.train")
    train(small.pack_dir, small.mixture_path, tmp_path / "run", depth=1, steps=4, batch_size=2, holdout_windows=0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train: ")]
    assert lines[0].startswith("train: 1/4 step (25%)") and "tok/s" in lines[0] and "ETA" in lines[0]
    assert lines[-1].startswith("train: 4/4 step (100%)")


def test_training_reads_plus_one_windows(small, tmp_path):
    from mixweave.data.mixture_manifest import write_mixture_manifest
    from mixweave.data.windows import read_windows, windows_info, write_pack_artifact
    from mixweave.trainer.sample_data import sample_mixture
    from mixweave.trainer.train import train

    info = windows_info(small.pack_dir)
    w = read_windows(small.pack_dir, "code")
    plus = np.concatenate([w, np.roll(w[:, :1], -1, axis=0)], axis=1)  # S+1 windows, overlapping by one
    pack = write_pack_artifact(tmp_path / "pack", {"code": plus}, seq_len=S, plus_one=True, tokenizer=info.tokenizer)
    stats = {"code": {"n_tokens": w.shape[0] * S, "n_docs": 1, "paths": ["code"]}}
    mixture = write_mixture_manifest(tmp_path / "mixture.json", sample_mixture(
        stats, float(w.shape[0] * S), weights=None, max_epochs=None, seq_len=S, tokenizer=info.tokenizer, seed=0))
    result = train(pack, mixture, tmp_path / "run", depth=1, steps=3, batch_size=2, holdout_windows=4)
    assert result.finished and result.tokens_seen == 3 * 2 * S  # S training positions per window
    assert np.isfinite(result.eval["sources"]["code"])


def test_train_rejects_bad_settings(small, tmp_path):
    from mixweave.trainer.train import train

    with pytest.raises(ConfigError, match="batch_size"):
        train(small.pack_dir, small.mixture_path, tmp_path / "x", batch_size=0)
    with pytest.raises(ConfigError, match="known settings"):
        train(small.pack_dir, small.mixture_path, tmp_path / "x", depht=2)


def test_benchmark_examples_score_answer_tokens_only(small):
    from mixweave.data.benchmarks import load_benchmarks
    from mixweave.data.windows import windows_info
    from mixweave.trainer.evaluate import tokenize_examples, tokenizer_from_info

    tok = tokenizer_from_info(windows_info(small.pack_dir).tokenizer)
    records = [{"benchmark": "b", "split": "dev", "id": "1", "prompt": "Q: two plus two?", "answer": " A: four"},
               {"benchmark": "b", "split": "dev", "id": "2", "prompt": "x" * 500, "answer": " the end"}]
    ex = tokenize_examples(records, tok, max_len=S)
    assert ex[0].n_prompt == len(tok.encode("Q: two plus two?"))
    assert list(ex[0].ids[ex[0].n_prompt:]) == tok.encode(" A: four")
    assert len(ex[1].ids) == S + 1 and list(ex[1].ids[-len(tok.encode(" the end")):]) == tok.encode(" the end")
    assert {r["split"] for r in load_benchmarks(small.benchmarks_path)} >= {"dev"}
    bad = Path(small.benchmarks_path).with_name("bad.jsonl")
    bad.write_text('{"benchmark": "b", "prompt": 3}\n')
    with pytest.raises(InputError, match="bad.jsonl:1"):
        load_benchmarks(bad)


DDP_WORKER = """
import json, os, sys, torch, torch.distributed as dist
torch.set_num_threads(1)
dist.init_process_group("gloo")
from mixweave.trainer.train import train
r = train(sys.argv[1], sys.argv[2], sys.argv[3], depth=1, steps=3, batch_size=2, holdout_windows=0, device="cpu")
checksum = sum(float(p.double().sum()) for p in r.model.parameters())
print(json.dumps({"rank": dist.get_rank(), "losses": r.losses, "checksum": checksum}))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_ddp_ranks_stay_in_sync_on_disjoint_data(small, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    procs = [subprocess.Popen([sys.executable, str(script), str(small.pack_dir), str(small.mixture_path),
                               str(tmp_path / "ddp")], env={**env, "RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][1][-2000:] + outs[1][1][-2000:]
    r0, r1 = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    assert r0["checksum"] == pytest.approx(r1["checksum"], rel=1e-12)  # gradients all-reduced every step
    assert r0["losses"] != r1["losses"]  # each rank trained on its own shard
    meta = json.loads((tmp_path / "ddp" / "checkpoints" / "step-0000003" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["sampler"]["position"] == 3 * 2 * 2


# -- ablation utility ------------------------------------------------------------------------------------------


def test_ablation_utility_table_reads_into_utilimax(small, tmp_path):
    from mixweave.data.utility_table import coerce_utility, read_utility_table
    from mixweave.utility.ablation import ablation_utility
    from mixweave.trainer.model import GPT, GPTConfig

    model = GPT(GPTConfig.from_depth(1, vocab_size=512, seq_len=S))
    budget = 30 * model.flops_per_token(S) * 8 * (S - 1)  # 30 steps of 8 windows
    res = ablation_utility(small.pack_dir, small.benchmarks_path, tmp_path / "abl", flops_budget=budget, depth=1,
                           sources=["books", "code"], batch_size=8, lr=3e-3)
    assert list(res.scores.index) == ["books", "code"] and "humaneval" in res.scores.columns
    assert res.scores.shape == res.std.shape and (res.std.to_numpy() >= 0).all()
    assert all(r["steps"] == 30 for r in res.runs.values())
    assert np.allclose(res.scores.to_numpy(), -res.losses.to_numpy())
    table = coerce_utility(res.scores, res.std)
    assert table.sources == ("books", "code") and table.std is not None
    stored = read_utility_table(tmp_path / "abl" / "utility.parquet")
    assert np.allclose(stored.aligned(["books", "code"]).scores, table.scores[:, [table.benchmarks.index(b)
                                                                                  for b in stored.benchmarks]])
    # the code-trained model predicts the code benchmarks' answers better than the books-trained one
    assert res.scores.loc["code", "humaneval"] > res.scores.loc["books", "humaneval"]
    with pytest.raises(ConfigError, match="below one step"):
        ablation_utility(small.pack_dir, small.benchmarks_path, tmp_path / "x", flops_budget=1.0, depth=1)


# -- CLI ---------------------------------------------------------------------------------------------------------


def test_train_cli_runs_and_reports(small, tmp_path):
    from click.testing import CliRunner

    from mixweave.cli.train import command as train_command

    args = ["--pack", str(small.pack_dir), "--mixture", str(small.mixture_path), "--out", str(tmp_path / "cli"),
            "--depth", "1", "--steps", "3", "--batch-size", "2", "--benchmarks", str(small.benchmarks_path),
            "--device", "cpu"]
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 0, result.output
    assert "trained steps 1..3 of 3" in result.output and "eval humaneval" in result.output
    again = CliRunner().invoke(train_command, args[:-2] + ["--lr", "0.1"])
    assert isinstance(again.exception, ConfigError)  # the main CLI prints it as one `error:` line


# -- GPU ----------------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bf16 autocast + torch.compile path)")
def test_gpu_bf16_compiled_training(small, tmp_path):
    from mixweave.trainer.train import train

    result = train(small.pack_dir, small.mixture_path, tmp_path / "gpu", depth=2, steps=30, batch_size=16,
                   lr=3e-3, log_interval=10, device="cuda", compile=True, holdout_windows=4)
    assert result.finished and all(np.isfinite(result.losses))
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5]) - 0.3
    assert result.mfu is not None or torch.cuda.get_device_name() not in ("H100", "H200", "A100")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_eval_matches_cpu_eval(small, tmp_path):
    from mixweave.data.windows import read_windows
    from mixweave.trainer.evaluate import window_loss
    from mixweave.trainer.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(1, vocab_size=512, seq_len=S))
    windows = read_windows(small.pack_dir, "code")[:32]
    cpu = window_loss(model, windows, torch.device("cpu"))
    gpu = window_loss(model.cuda(), windows, torch.device("cuda"),
                      autocast=lambda: torch.autocast("cuda", dtype=torch.bfloat16))
    assert abs(cpu - gpu) < 0.05
