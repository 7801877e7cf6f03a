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

import torch

from mixweave.data.manifest import (MANIFEST_NAME, atomic_folder, build_manifest, fingerprint, write_json_atomic,
                                    write_text_atomic)
from mixweave.data.progress import Progress
from mixweave.errors import ConfigError
from mixweave.trainer.config import TrainConfig
from mixweave.trainer.dataset import MixtureLoader, PackDataset
from mixweave.trainer.model import GPT, GPTConfig
from mixweave.trainer.plan import MixturePlan, load_plan

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


def train_plan(plan: MixturePlan, pack_dir: str | Path, out_dir: str | Path, cfg: TrainConfig, *,
               holdout: dict[str, int] | None = None, dataset: PackDataset | None = None,
               on_log: Callable[[dict], None] | None = None) -> TrainResult:
    """Train on an explicit plan (what :func:`train` and the ablations call)."""
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
    dataset = dataset or PackDataset(pack_dir, plan.names)
    holdout = holdout or {}
    per_step = cfg.batch_size * cfg.grad_accum * world
    steps = cfg.steps or max(1, plan.total_windows // per_step)
    if steps * per_step > plan.total_windows:
        log.info("train: %d steps x %d windows exceed the plan's %d windows; the order continues into another "
                 "pass (sources keep their shares)", steps, per_step, plan.total_windows)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, steps // 20)
    warmup = min(warmup, steps)
    fp = _run_fingerprint(dataclasses.replace(cfg, steps=steps), plan, world)

    torch.manual_seed(cfg.seed)
    vocab = int(plan.tokenizer["vocab_size"])
    gcfg = GPTConfig.from_depth(cfg.depth, vocab_size=vocab, seq_len=plan.seq_len)
    model = GPT(gcfg).to(device)
    opt = _optimizer(model, cfg)
    loader = MixtureLoader(dataset, plan, cfg.batch_size, rank=rank, world_size=world, seed=cfg.data_seed,
                           num_positions=None if steps * per_step <= plan.total_windows else steps * per_step,
                           batching=cfg.batching, global_batch=per_step)
    start, resumed_from, tokens_seen = 0, None, 0
    ckpt = latest_checkpoint(out) if cfg.resume else None
    if ckpt is not None:
        meta = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))
        if meta.get("fingerprint") != fp:
            theirs = meta.get("config", {})
            diff = [k for k in RUN_FIELDS if theirs.get(k) != getattr(dataclasses.replace(cfg, steps=steps), k)]
            what = f"config fields {', '.join(diff)}" if diff else "the mixture or pack (sha256)"
            raise ConfigError(f"{out} holds a checkpoint of a different run ({what} differ); use a new --out, "
                              "or resume=False / --no-resume to start over there")
        model.load_state_dict(torch.load(ckpt / "model.pt", map_location=device, weights_only=True))
        opt.load_state_dict(torch.load(ckpt / "optim.pt", map_location=device, weights_only=True))
        loader.load_state_dict(meta["sampler"])
        start, resumed_from, tokens_seen = int(meta["step"]), int(meta["step"]), int(meta["tokens_seen"])
        log.info("train: resumed from %s (step %d)", ckpt, start)
    train_model = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if use_cuda else None)
    compile_ = cfg.compile if cfg.compile is not None else use_cuda
    if compile_:
        train_model = torch.compile(train_model)

    examples = []
    if cfg.benchmarks:
        from mixweave.data.benchmarks import load_benchmarks
        from mixweave.trainer.evaluate import tokenize_examples, tokenizer_from_info

        records = load_benchmarks(cfg.benchmarks, cfg.benchmark_split)
        examples = tokenize_examples(records, tokenizer_from_info(plan.tokenizer), plan.seq_len,
                                     cfg.max_examples_per_benchmark)

    peak = _peak_flops(device, cfg.peak_flops)
    flops_tok = model.flops_per_token(plan.seq_len)
    metrics_path = out / "metrics.jsonl"
    result = TrainResult(out_dir=out, step=start, steps=steps, first_step=start + 1, resumed_from=resumed_from,
                         tokens_seen=tokens_seen)
    stop = min(steps, cfg.stop_after) if cfg.stop_after else steps
    tokens_per_step = per_step * (plan.window_tokens - 1)
    window_t, window_tok, run_t0 = time.perf_counter(), 0, time.perf_counter()
    meta_base = {"config": dataclasses.asdict(dataclasses.replace(cfg, steps=steps)), "fingerprint": fp,
                 "model": gcfg.to_dict(), "plan": plan.to_dict(), "mixture_sha256": plan.mixture_sha256,
                 "pack_sha256": plan.pack_sha256, "world_size": world, "holdout": holdout}

    def checkpoint(step: int) -> Path | None:
        if rank != 0:
            return None
        meta = {**meta_base, "step": step, "tokens_seen": result.tokens_seen, "sampler": loader.state_dict()}
        return _save_checkpoint(out, step, model, opt, meta, cfg.keep_checkpoints)

    model.train()
    pending: list[torch.Tensor] = []  # per-step losses still on the device (read once per log interval)
    quiet = {} if rank == 0 else {"interval": math.inf, "bar": False}  # one progress report per run, from rank 0
    with Progress(stop - start, unit="step", label="train", logger=log, **quiet) as progress:
        for step in range(start + 1, stop + 1):
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
            if step % cfg.log_interval == 0 or step == stop:
                result.losses.extend(_losses_to_host(pending))
                pending.clear()
                total = result.losses[-1]  # the logged loss is the loss of the logging step
                if use_cuda:
                    torch.cuda.synchronize()
                dt = time.perf_counter() - window_t
                tps = window_tok / max(dt, 1e-9)
                mfu = tps * flops_tok / peak if peak else None
                record = {"step": step, "loss": total, "lr": lr, "tokens_per_s": tps, "mfu": mfu,
                          "tokens_seen": result.tokens_seen}
                log.info("step %d/%d | loss %.4f | lr %.2e | %s tok/s | MFU %s", step, steps, total, lr,
                         f"{tps:,.0f}", "n/a" if mfu is None else f"{100 * mfu:.1f}%")
                if rank == 0:
                    with open(metrics_path, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(record) + "\n")
                if on_log:
                    on_log(record)
                result.mfu = mfu
                window_t, window_tok = time.perf_counter(), 0
            if cfg.eval_interval and step % cfg.eval_interval == 0 and step != steps:
                ev = _eval(model, dataset, holdout, examples, device, cfg, autocast)
                log.info("eval step %d: %s", step, _eval_line(ev))
                if rank == 0:
                    with open(metrics_path, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps({"step": step, "eval": ev}) + "\n")
            if cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0 and step != stop:
                checkpoint(step)
    elapsed = time.perf_counter() - run_t0
    run_steps = result.step - start
    result.tokens_per_s = run_steps * tokens_per_step / max(elapsed, 1e-9)
    result.checkpoint = checkpoint(result.step) if result.step > start else latest_checkpoint(out)
    result.finished = result.step >= steps
    result.model = model
    if result.finished:
        result.eval = _eval(model, dataset, holdout, examples, device, cfg, autocast)
        log.info("eval (final, step %d): %s", result.step, _eval_line(result.eval))
        if rank == 0:
            write_json_atomic(out / "eval.json", {"step": result.step, **result.eval})
            manifest = build_manifest(stage="train", stage_version=TRAIN_VERSION, config=meta_base["config"],
                                      fingerprint_value=fp,
                                      inputs={"mixture": {"sha256": plan.mixture_sha256},
                                              "pack": {"path": str(pack_dir), "sha256": plan.pack_sha256}},
                                      root=out, counts={"steps": result.step, "tokens": result.tokens_seen},
                                      extra={"eval": result.eval, "model": gcfg.to_dict(),
                                             "params": model.num_params()})
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
    """Next-token loss through ``model``'s forward (so DDP hooks and torch.compile apply)."""
    logits = model(batch[:, :-1])
    return torch.nn.functional.cross_entropy(logits.float().view(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


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
    from mixweave.data.windows import windows_info

    info = windows_info(pack_dir)
    holdout = _holdout({n: int(s["n_windows"]) for n, s in info.sources.items()}, cfg.holdout_windows)
    plan = load_plan(pack_dir, mixture_path, holdout=holdout)
    holdout = {n: holdout.get(n, 0) for n in plan.names}
    return train_plan(plan, pack_dir, out_dir, cfg, holdout=holdout)
