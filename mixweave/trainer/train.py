"""The training loop: mixture.json + pack -> checkpoints, metrics, eval losses.

AdamW (weight decay on matrices only), linear warmup then cosine decay to
``min_lr_ratio * lr``, gradient clipping, gradient accumulation. On CUDA: bf16 autocast, TF32 and
``torch.compile``; on CPU: fp32, eager. Data: :class:`MixtureLoader` over the window plan, so a
run of ``steps x batch x grad_accum x world`` windows draws each source as planned (``steps``
defaults to exactly the plan); the last ``holdout`` windows of every source are kept out of
training for the per-source eval.

Checkpoints (``out/checkpoints/step-NNNNNNN/``: ``model.pt``, ``optim.pt``, ``meta.json`` with the
config, the mixture's and pack's sha256, the sampler state and step) are written atomically;
``out/checkpoints/latest`` names the newest. ``train`` resumes from it when the run-defining config
and the inputs match, and the resumed run is bit-identical to an uninterrupted one on CPU
(same ops, same data positions, same optimizer state). One log line per ``log_interval``: step,
loss (of that step), lr, tokens/s, MFU (against ``peak_flops``, or a table of CUDA bf16 peaks); the
same numbers go to ``out/metrics.jsonl``. Step losses stay on the device until then: one host sync
per log interval, not one per micro-step. Between log lines, :class:`~mixweave.data.progress.Progress`
shows steps done, tokens/s and the ETA (a bar on a terminal, a log line every 15 s otherwise). A finished run writes ``out/eval.json`` and ``out/_manifest.json``.

Sequence-length phases: when mixture.json lists ``phase`` variants (each its own mixture over its
own pack, in training order), :func:`train` trains them in order (:func:`train_phases`): one model
built for the largest seq_len, each phase with its own plan, sampler and dataset at its seq_len, the
steps shared out by the phases' token budgets (:func:`phase_steps`), one LR schedule over the whole
run, checkpoints recording (phase, sampler position), an eval of each phase's held-out windows at
its end and metrics tagged with the phase. Without phase variants nothing changes.

Multi-process: when ``torch.distributed`` is initialised the model is wrapped in DDP and each rank
reads its own shard of the order (:class:`MixtureSampler`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from mixweave.data.manifest import (MANIFEST_NAME, atomic_folder, build_manifest, fingerprint, write_json_atomic,
                                    write_text_atomic)
from mixweave.data.progress import Progress
from mixweave.errors import ConfigError, InputError
from mixweave.trainer.config import TrainConfig
from mixweave.trainer.dataset import MixtureLoader, PackDataset
from mixweave.trainer.model import GPT, GPTConfig
from mixweave.trainer.plan import MixturePlan, hamilton, load_plan

log = logging.getLogger(__name__)

TRAIN_VERSION = 1
#: dense bf16 peak FLOP/s by CUDA device name fragment (for MFU)
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "4090": 165e12,
              "L4": 121e12, "V100": 125e12}
#: fields that define a run: resuming with different values is refused
RUN_FIELDS = ("depth", "steps", "batch_size", "grad_accum", "lr", "min_lr_ratio", "warmup_steps", "weight_decay",
              "beta1", "beta2", "grad_clip", "seed", "data_seed", "holdout_windows")


@dataclass
class TrainResult:
    out_dir: Path
    step: int  # last completed step
    steps: int  # planned steps
    losses: list[float] = field(default_factory=list)  # per step run in this call
    first_step: int = 1  # step number of losses[0]
    tokens_seen: int = 0
    tokens_per_s: float = 0.0
    mfu: float | None = None
    eval: dict = field(default_factory=dict)
    resumed_from: int | None = None
    finished: bool = False
    checkpoint: Path | None = None
    model: Any = field(default=None, repr=False)  # the trained GPT (unwrapped)
    phases: list[dict] = field(default_factory=list)  # phased runs: name, seq_len, steps, first/last step
    phase_losses: dict[str, list[float]] = field(default_factory=dict)  # phased runs: losses run here, by phase


def lr_at(step: int, cfg: TrainConfig, steps: int, warmup: int) -> float:
    """Linear warmup to ``lr`` over ``warmup`` steps, then cosine to ``min_lr_ratio * lr`` at ``steps``."""
    if warmup and step <= warmup:
        return cfg.lr * step / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    low = cfg.lr * cfg.min_lr_ratio
    return low + 0.5 * (cfg.lr - low) * (1 + math.cos(math.pi * progress))


_HEAP_KEPT = False


def keep_freed_memory() -> bool:
    """On glibc, serve large blocks from the heap and keep freed memory (``mallopt``: no mmap, no trim).

    A CPU step allocates tensors of hundreds of MB (a 50k-vocabulary model's logits: batch x S x V
    floats); above glibc's mmap threshold each one is mapped and page-faulted afresh and unmapped on
    free, so the kernel zeroes pages every step. Measured on 2 cores (8 AdamW steps, depth 1, V 50,258,
    S 256, batch 8): 7.9 s -> 4.1 s, page faults 3.4M -> 0.67M. Trade-off: the process keeps its peak
    heap instead of returning it to the OS. Once per process; a no-op (False) off glibc."""
    global _HEAP_KEPT
    if _HEAP_KEPT:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        _HEAP_KEPT = bool(libc.mallopt(-4, 0) and libc.mallopt(-1, ctypes.c_int(2**31 - 1)))  # M_MMAP_MAX, M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        _HEAP_KEPT = False
    return _HEAP_KEPT


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    if name == "cpu":
        keep_freed_memory()
    return torch.device(name)


def _peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return float(override)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in PEAK_FLOPS.items():
            if key in name:
                return value
    return None


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


def _holdout(plan_pack_counts: dict[str, int], n: int) -> dict[str, int]:
    return {name: min(n, w // 10) for name, w in plan_pack_counts.items()}


def _run_fingerprint(cfg: TrainConfig, plan: MixturePlan, world: int) -> str:
    run = {k: getattr(cfg, k) for k in RUN_FIELDS}
    return fingerprint("train", TRAIN_VERSION, {"run": run, "world_size": world},
                       {"mixture": plan.mixture_sha256, "pack": plan.pack_sha256})


def _save_checkpoint(out: Path, step: int, model: torch.nn.Module, opt: torch.optim.Optimizer, meta: dict,
                     keep: int) -> Path:
    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    with atomic_folder(final) as tmp:
        torch.save(model.state_dict(), tmp / "model.pt")
        torch.save(opt.state_dict(), tmp / "optim.pt")
        write_json_atomic(tmp / "meta.json", meta)
    write_text_atomic(root / "latest", final.name + "\n")
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out: str | Path) -> Path | None:
    pointer = Path(out) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text(encoding="utf-8").strip()
    return path if (path / "meta.json").is_file() else None


def _eval(model, dataset: PackDataset, holdout: dict[str, int], examples, device, cfg: TrainConfig,
          autocast) -> dict[str, Any]:
    from mixweave.trainer.evaluate import benchmark_losses, window_loss

    result: dict[str, Any] = {"sources": {}, "benchmarks": {}}
    for name, n in holdout.items():
        if n > 0:
            windows = dataset.source_windows(name)[-n:]
            result["sources"][name] = window_loss(model, windows, device, cfg.eval_batch_size, autocast)
    if examples:
        result["benchmarks"] = benchmark_losses(model, examples, device, cfg.eval_batch_size, autocast)
    return result


@dataclass(frozen=True)
class PhaseSpec:
    """One sequence-length phase of a phased run (a ``phase`` variant of mixture.json): its plan over
    its own pack, the windows it holds out for its eval, its token budget (its share of the steps)."""

    name: str
    plan: MixturePlan
    pack_dir: Path
    holdout: dict[str, int]
    budget_tokens: float
    mixture_path: Path | None = None


def phase_steps(budgets: list[float], seq_lens: list[int], per_step: int, steps: int | None) -> tuple[list[int], int]:
    """Optimizer steps per phase: Hamilton (largest remainder) over the quotas
    ``budget_p / (per_step * S_p)`` scaled to ``steps`` (default: their rounded sum), so they sum to
    ``steps`` exactly; a phase with a positive budget gets at least one step while ``steps`` allows
    (taken from the phase with the most). Returns (steps per phase, total). O(phases)."""
    q = np.array([max(0.0, float(b)) / (per_step * int(s)) for b, s in zip(budgets, seq_lens)], dtype=np.float64)
    if not q.size or q.sum() <= 0:
        raise InputError("the phases have no token budget to train on; check the mixture's phase budgets")
    positive = q > 0
    total = int(steps) if steps else max(int(round(q.sum())), int(positive.sum()))
    x = hamilton(q * total / q.sum(), total)
    while True:
        starved = np.flatnonzero(positive & (x == 0))
        donor = int(np.argmax(x))
        if not starved.size or x[donor] <= 1:
            break
        x[donor] -= 1
        x[starved[0]] += 1
    return [int(v) for v in x], total


def _phases_fingerprint(cfg: TrainConfig, phases: list[PhaseSpec], counts: list[int], world: int) -> str:
    run = {k: getattr(cfg, k) for k in RUN_FIELDS}
    layout = [{"name": p.name, "steps": n, "seq_len": p.plan.seq_len} for p, n in zip(phases, counts)]
    return fingerprint("train", TRAIN_VERSION, {"run": run, "world_size": world, "phases": layout},
                       {p.name: {"mixture": p.plan.mixture_sha256, "pack": p.plan.pack_sha256} for p in phases})


def train_plan(plan: MixturePlan, pack_dir: str | Path, out_dir: str | Path, cfg: TrainConfig, *,
               holdout: dict[str, int] | None = None, dataset: PackDataset | None = None,
               on_log: Callable[[dict], None] | None = None) -> TrainResult:
    """Train on an explicit plan (what :func:`train` and the ablations call)."""
    single = PhaseSpec(name="", plan=plan, pack_dir=Path(pack_dir), holdout=holdout or {},
                       budget_tokens=plan.budget_tokens)
    return _train([single], out_dir, cfg, phased=False, dataset=dataset, on_log=on_log)


def train_phases(phases: list[PhaseSpec], out_dir: str | Path, cfg: TrainConfig, *,
                 on_log: Callable[[dict], None] | None = None) -> TrainResult:
    """Sequence-length phases in order (the phase switch): one model built for the largest seq_len
    (its rope cache), each phase with its own plan, sampler and dataset at its own seq_len; steps
    shared out by :func:`phase_steps`; one LR schedule over the whole run; checkpoints record the
    phase and its sampler position, so a killed run resumes inside the right phase; each phase is
    evaluated at its end on its held-out windows (benchmarks once, at the end, at the last phase's
    seq_len); metrics carry the phase. Cost: one phase's windows in memory at a time (each loaded
    when its phase starts)."""
    if not phases:
        raise InputError("train_phases needs at least one phase")
    names = [p.name for p in phases]
    if len(set(names)) != len(names) or not all(names):
        raise InputError(f"phase names must be unique and non-empty, got {names}")
    vocabs = {(int(p.plan.tokenizer["vocab_size"]), p.plan.tokenizer.get("sha256")) for p in phases}
    if len(vocabs) != 1:
        raise InputError(f"the phases' packs were made with different tokenizers ({sorted(map(str, vocabs))}); "
                         "re-run pack so that every phase uses the run's tokenizer")
    return _train(list(phases), out_dir, cfg, phased=True, on_log=on_log)


def _train(phases: list[PhaseSpec], out_dir: str | Path, cfg: TrainConfig, *, phased: bool,
           dataset: PackDataset | None = None, on_log: Callable[[dict], None] | None = None) -> TrainResult:
    """The training loop over one plan (``phased=False``: :func:`train_plan`, unchanged files and
    fingerprints) or over sequence-length phases (:func:`train_phases`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    world = torch.distributed.get_world_size() if distributed else 1
    device = _device(cfg.device)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    use_cuda = device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_cuda else None
    if use_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    per_step = cfg.batch_size * cfg.grad_accum * world
    plan, pack_dir = phases[0].plan, phases[0].pack_dir
    if phased:
        counts, steps = phase_steps([p.budget_tokens for p in phases], [p.plan.seq_len for p in phases], per_step,
                                    cfg.steps)
    else:
        dataset = dataset or PackDataset(pack_dir, plan.names)
        steps = cfg.steps or max(1, plan.total_windows // per_step)
        counts = [steps]
    for p, n in zip(phases, counts):
        if n * per_step > p.plan.total_windows:
            log.info("train: %d steps x %d windows exceed the %splan's %d windows; the order continues into another "
                     "pass (sources keep their shares)", n, per_step, f"phase {p.name}'s " if phased else "",
                     p.plan.total_windows)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, steps // 20)
    warmup = min(warmup, steps)
    run_cfg = dataclasses.replace(cfg, steps=steps)
    fp = _phases_fingerprint(run_cfg, phases, counts, world) if phased else _run_fingerprint(run_cfg, plan, world)
    ends = np.cumsum(counts).tolist()
    begins = [e - n for e, n in zip(ends, counts)]

    torch.manual_seed(cfg.seed)
    vocab = int(plan.tokenizer["vocab_size"])
    gcfg = GPTConfig.from_depth(cfg.depth, vocab_size=vocab, seq_len=max(p.plan.seq_len for p in phases))
    model = GPT(gcfg).to(device)
    opt = _optimizer(model, cfg)

    def make_loader(i: int, ds: PackDataset) -> MixtureLoader:
        p_plan, n = phases[i].plan, counts[i]
        return MixtureLoader(ds, p_plan, cfg.batch_size, rank=rank, world_size=world, seed=cfg.data_seed,
                             num_positions=None if n * per_step <= p_plan.total_windows else n * per_step,
                             batching=cfg.batching, global_batch=per_step)

    loader = None if phased else make_loader(0, dataset)
    start, resumed_from, tokens_seen, saved = 0, None, 0, None
    phase_evals: dict[str, dict] = {}
    ckpt = latest_checkpoint(out) if cfg.resume else None
    if ckpt is not None:
        meta = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))
        if meta.get("fingerprint") != fp:
            theirs = meta.get("config", {})
            diff = [k for k in RUN_FIELDS if theirs.get(k) != getattr(run_cfg, k)]
            what = f"config fields {', '.join(diff)}" if diff else "the mixture or pack (sha256)"
            raise ConfigError(f"{out} holds a checkpoint of a different run ({what} differ); use a new --out, "
                              "or resume=False / --no-resume to start over there")
        model.load_state_dict(torch.load(ckpt / "model.pt", map_location=device, weights_only=True))
        opt.load_state_dict(torch.load(ckpt / "optim.pt", map_location=device, weights_only=True))
        if phased:  # the sampler state belongs to the phase the checkpoint was written in
            saved = (int(meta["phase_index"]), meta["sampler"])
            phase_evals = dict(meta.get("phase_evals") or {})
        else:
            loader.load_state_dict(meta["sampler"])
        start, resumed_from, tokens_seen = int(meta["step"]), int(meta["step"]), int(meta["tokens_seen"])
        log.info("train: resumed from %s (step %d%s)", ckpt, start,
                 f", phase {meta.get('phase')}" if phased else "")
    train_model = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if use_cuda else None)
    compile_ = cfg.compile if cfg.compile is not None else use_cuda
    if compile_:
        train_model = torch.compile(train_model)

    records: list = []
    examples_by_len: dict[int, list] = {}
    if cfg.benchmarks:
        from mixweave.data.benchmarks import load_benchmarks

        records = load_benchmarks(cfg.benchmarks, cfg.benchmark_split)

    def examples_at(seq_len: int) -> list:
        """The benchmark examples tokenised for windows of ``seq_len`` (once per length)."""
        if records and seq_len not in examples_by_len:
            from mixweave.trainer.evaluate import tokenize_examples, tokenizer_from_info

            examples_by_len[seq_len] = tokenize_examples(records, tokenizer_from_info(plan.tokenizer), seq_len,
                                                         cfg.max_examples_per_benchmark)
        return examples_by_len.get(seq_len, [])

    if not phased:
        examples_at(plan.seq_len)
    peak = _peak_flops(device, cfg.peak_flops)
    metrics_path = out / "metrics.jsonl"
    result = TrainResult(out_dir=out, step=start, steps=steps, first_step=start + 1, resumed_from=resumed_from,
                         tokens_seen=tokens_seen)
    stop = min(steps, cfg.stop_after) if cfg.stop_after else steps
    run_t0 = time.perf_counter()
    if phased:
        meta_base = {"config": dataclasses.asdict(run_cfg), "fingerprint": fp, "model": gcfg.to_dict(),
                     "world_size": world,
                     "phases": [{"name": p.name, "steps": n, "first_step": b + 1, "seq_len": p.plan.seq_len,
                                 "pack_dir": str(p.pack_dir), "mixture_sha256": p.plan.mixture_sha256,
                                 "pack_sha256": p.plan.pack_sha256, "holdout": p.holdout, "plan": p.plan.to_dict()}
                                for p, n, b in zip(phases, counts, begins)]}
        result.phases = [{"name": p.name, "seq_len": p.plan.seq_len, "steps": n, "first_step": b + 1, "last_step": e}
                         for p, n, b, e in zip(phases, counts, begins, ends)]
    else:
        meta_base = {"config": dataclasses.asdict(run_cfg), "fingerprint": fp,
                     "model": gcfg.to_dict(), "plan": plan.to_dict(), "mixture_sha256": plan.mixture_sha256,
                     "pack_sha256": plan.pack_sha256, "world_size": world, "holdout": phases[0].holdout}
    current: dict[str, Any] = {"index": 0, "loader": loader, "dataset": dataset}

    def checkpoint(step: int) -> Path | None:
        if rank != 0:
            return None
        meta = {**meta_base, "step": step, "tokens_seen": result.tokens_seen,
                "sampler": current["loader"].state_dict()}
        if phased:
            meta.update(phase=phases[current["index"]].name, phase_index=current["index"], phase_evals=phase_evals)
        return _save_checkpoint(out, step, model, opt, meta, cfg.keep_checkpoints)

    def write_metrics(record: dict) -> None:
        if rank == 0:
            with open(metrics_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

    model.train()
    pending: list[torch.Tensor] = []  # per-step losses still on the device (read once per log interval)
    quiet = {} if rank == 0 else {"interval": math.inf, "bar": False}  # one progress report per run, from rank 0
    with Progress(stop - start, unit="step", label="train", logger=log, **quiet) as progress:
        for i, ph in enumerate(phases):
            lo, hi = begins[i], ends[i]
            if hi <= start or lo >= stop or hi == lo:
                continue  # trained before the resume, after the stop, or given no steps
            if phased:
                ds = PackDataset(ph.pack_dir, ph.plan.names)
                loader = make_loader(i, ds)
                if start > lo:  # resumed inside this phase
                    if saved is None or saved[0] != i:
                        raise InputError(f"{out}: the checkpoint at step {start} is not inside phase {ph.name}; "
                                         "start over with resume=False / --no-resume")
                    loader.load_state_dict(saved[1])
                current.update(index=i, loader=loader, dataset=ds)
                log.info("train: phase %s (%d of %d): steps %d..%d at seq_len %d", ph.name, i + 1, len(phases),
                         lo + 1, hi, ph.plan.seq_len)
            ds, loader, p_plan = current["dataset"], current["loader"], ph.plan
            tokens_per_step = per_step * (p_plan.window_tokens - 1)
            flops_tok = model.flops_per_token(p_plan.seq_len)
            window_t, window_tok = time.perf_counter(), 0
            tag = {"phase": ph.name} if phased else {}
            last = min(hi, stop)
            for step in range(max(lo, start) + 1, last + 1):
                lr = lr_at(step, cfg, steps, warmup)
                for group in opt.param_groups:
                    group["lr"] = lr
                pending.append(_accumulate_step(train_model, loader, device, cfg, distributed, autocast))
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                result.step = step
                result.tokens_seen += tokens_per_step
                window_tok += tokens_per_step
                progress.update(1, tok=tokens_per_step)
                if step % cfg.log_interval == 0 or step == stop or (phased and step == last):
                    new = _losses_to_host(pending)
                    result.losses.extend(new)
                    if phased:
                        result.phase_losses.setdefault(ph.name, []).extend(new)
                    pending.clear()
                    total = result.losses[-1]  # the logged loss is the loss of the logging step
                    if use_cuda:
                        torch.cuda.synchronize()
                    dt = time.perf_counter() - window_t
                    tps = window_tok / max(dt, 1e-9)
                    mfu = tps * flops_tok / peak if peak else None
                    record = {"step": step, "loss": total, "lr": lr, "tokens_per_s": tps, "mfu": mfu,
                              "tokens_seen": result.tokens_seen, **tag}
                    log.info("step %d/%d%s | loss %.4f | lr %.2e | %s tok/s | MFU %s", step, steps,
                             f" [{ph.name}]" if phased else "", total, lr,
                             f"{tps:,.0f}", "n/a" if mfu is None else f"{100 * mfu:.1f}%")
                    write_metrics(record)
                    if on_log:
                        on_log(record)
                    result.mfu = mfu
                    window_t, window_tok = time.perf_counter(), 0
                if cfg.eval_interval and step % cfg.eval_interval == 0 and step != steps:
                    ev = _eval(model, ds, ph.holdout, examples_at(p_plan.seq_len), device, cfg, autocast)
                    log.info("eval step %d%s: %s", step, f" [{ph.name}]" if phased else "", _eval_line(ev))
                    write_metrics({"step": step, **tag, "eval": ev})
                if phased and step == hi:  # the phase's end: its held-out windows at its seq_len
                    ev = _eval(model, ds, ph.holdout, [], device, cfg, autocast)
                    phase_evals[ph.name] = {"step": step, "seq_len": p_plan.seq_len, "sources": ev["sources"]}
                    log.info("eval (end of phase %s, step %d): %s", ph.name, step, _eval_line(ev))
                    write_metrics({"step": step, **tag, "phase_end": True, "eval": ev})
                if cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0 and step != stop:
                    checkpoint(step)
    elapsed = time.perf_counter() - run_t0
    result.tokens_per_s = (result.tokens_seen - tokens_seen) / max(elapsed, 1e-9)
    result.checkpoint = checkpoint(result.step) if result.step > start else latest_checkpoint(out)
    result.finished = result.step >= steps
    result.model = model
    if result.finished:
        if phased:
            i_last = max(i for i, n in enumerate(counts) if n > 0)
            ph = phases[i_last]
            if ph.name not in phase_evals:  # resumed at the very end: evaluate the last phase now
                ds = current["dataset"] if current["index"] == i_last and current["dataset"] is not None \
                    else PackDataset(ph.pack_dir, ph.plan.names)
                ev = _eval(model, ds, ph.holdout, [], device, cfg, autocast)
                phase_evals[ph.name] = {"step": result.step, "seq_len": ph.plan.seq_len, "sources": ev["sources"]}
            bench = {}
            if records:
                from mixweave.trainer.evaluate import benchmark_losses

                bench = benchmark_losses(model, examples_at(ph.plan.seq_len), device, cfg.eval_batch_size, autocast)
            result.eval = {"sources": phase_evals[ph.name]["sources"], "benchmarks": bench,
                           "phases": dict(phase_evals)}
        else:
            result.eval = _eval(model, dataset, phases[0].holdout, examples_at(plan.seq_len), device, cfg, autocast)
        log.info("eval (final, step %d): %s", result.step, _eval_line(result.eval))
        if rank == 0:
            write_json_atomic(out / "eval.json", {"step": result.step, **result.eval})
            if phased:
                inputs = {f"{kind}:{p.name}": {"path": str(path), "sha256": sha}
                          for p in phases
                          for kind, path, sha in (("mixture", p.mixture_path or "", p.plan.mixture_sha256),
                                                  ("pack", p.pack_dir, p.plan.pack_sha256))}
                extra = {"eval": result.eval, "model": gcfg.to_dict(), "params": model.num_params(),
                         "phases": result.phases}
            else:
                inputs = {"mixture": {"sha256": plan.mixture_sha256},
                          "pack": {"path": str(pack_dir), "sha256": plan.pack_sha256}}
                extra = {"eval": result.eval, "model": gcfg.to_dict(), "params": model.num_params()}
            manifest = build_manifest(stage="train", stage_version=TRAIN_VERSION, config=meta_base["config"],
                                      fingerprint_value=fp, inputs=inputs,
                                      root=out, counts={"steps": result.step, "tokens": result.tokens_seen},
                                      extra=extra)
            write_json_atomic(out / MANIFEST_NAME, manifest)
    return result


def _accumulate_step(train_model, loader: MixtureLoader, device: torch.device, cfg: TrainConfig, distributed: bool,
                     autocast) -> torch.Tensor:
    """Forward and backward over ``grad_accum`` micro-batches. Returns the step's loss (sum of the
    micro-losses / grad_accum), added in float64 on the device in micro-batch order: the same value
    that adding their Python floats gave, without a host sync per micro-step."""
    total = torch.zeros((), dtype=torch.float64, device=device)
    for micro in range(cfg.grad_accum):
        batch = loader.next_batch().to(device, non_blocking=True)
        sync = contextlib.nullcontext()
        if distributed and micro < cfg.grad_accum - 1:
            sync = train_model.no_sync()
        with sync, (autocast() if autocast else contextlib.nullcontext()):
            loss = _loss(train_model, batch) / cfg.grad_accum
        loss.backward()
        total += loss.detach().to(torch.float64)
    return total


def _losses_to_host(pending: list[torch.Tensor]) -> list[float]:
    """The per-step losses of a log interval as Python floats: the loop's one host sync per interval."""
    return torch.stack(pending).tolist() if pending else []


def _loss(model, batch: torch.Tensor) -> torch.Tensor:
    """Next-token loss through ``model``'s forward (so DDP hooks and torch.compile apply, to the loss too)."""
    return model(batch[:, :-1], batch[:, 1:])


def _eval_line(ev: dict) -> str:
    parts = [f"{k}={v:.3f}" for k, v in ev.get("sources", {}).items()]
    parts += [f"{k}={v['loss']:.3f}" for k, v in ev.get("benchmarks", {}).items()]
    return " ".join(parts) or "-"


def train(pack_dir: str | Path, mixture_path: str | Path, out_dir: str | Path, *,
          config: TrainConfig | None = None, **overrides: Any) -> TrainResult:
    """Train the compact GPT on the mixture (module docstring); ``overrides`` set TrainConfig fields."""
    try:
        cfg = dataclasses.replace(config or TrainConfig(), **overrides)
    except TypeError as exc:
        known = ", ".join(f.name for f in dataclasses.fields(TrainConfig))
        raise ConfigError(f"train: {exc}; known settings: {known}") from None
    phases = phase_specs(pack_dir, mixture_path, cfg.holdout_windows)
    if phases:  # sequence-length phases: the phase switch
        return train_phases(phases, out_dir, cfg)
    plan, holdout = _plan_with_holdout(pack_dir, mixture_path, cfg.holdout_windows)
    return train_plan(plan, pack_dir, out_dir, cfg, holdout=holdout)


def _plan_with_holdout(pack_dir: str | Path, mixture_path: str | Path, holdout_windows: int
                       ) -> tuple[MixturePlan, dict[str, int]]:
    from mixweave.data.windows import windows_info

    info = windows_info(pack_dir)
    holdout = _holdout({n: int(s["n_windows"]) for n, s in info.sources.items()}, holdout_windows)
    plan = load_plan(pack_dir, mixture_path, holdout=holdout)
    return plan, {n: holdout.get(n, 0) for n in plan.names}


def phase_specs(pack_dir: str | Path, mixture_path: str | Path, holdout_windows: int) -> list[PhaseSpec]:
    """The ``phase`` variants of mixture.json in training order, each with its plan over its own pack
    (``pack_dir`` is the pack artifact the variants' ``pack`` entries are relative to); [] for a
    mixture without phases (expert and stitch variants are trained by the user, one run each)."""
    from mixweave.data.mixture_manifest import mixture_variants

    specs = []
    for v in mixture_variants(mixture_path, pack_root=pack_dir):
        if v.kind != "phase":
            continue
        plan, holdout = _plan_with_holdout(v.pack_dir, v.mixture_path, holdout_windows)
        specs.append(PhaseSpec(name=v.name, plan=plan, pack_dir=Path(v.pack_dir), holdout=holdout,
                               budget_tokens=float(v.budget_tokens), mixture_path=Path(v.mixture_path)))
    return specs
