"""The ``train`` stage: a training run of the built-in trainer on the mixture, resumable from ``train.work/``;
with sequence-length phases (mixture.json's ``phase`` variants) it trains them in order (the phase switch)."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from ...data.manifest import fingerprint, manifest_sha256, sha256_file
from ...data.typed import to_plain
from ..runner import Stage, StageContext, StageResult

LOG = logging.getLogger(__name__)


def run_train_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ...trainer.train import train

    cfg = ctx.config.train
    if ctx.config.benchmarks and cfg.benchmarks is None:  # the run's benchmarks, unless train names its own
        cfg = dataclasses.replace(cfg, benchmarks=ctx.config.benchmarks)
    mixture = ctx.artifact("mix") / "mixture.json"
    work = train_work_folder(ctx.out / "train.work", cfg, mixture, ctx.artifact("pack"))
    result = train(ctx.artifact("pack"), mixture, work, config=cfg)
    shutil.copytree(work, tmp, dirs_exist_ok=True)
    losses = [float(x) for x in result.losses]
    summary = {"steps": result.steps, "last_step": result.step, "finished": result.finished,
               "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
               "tokens_seen": result.tokens_seen, "tokens_per_s": round(result.tokens_per_s, 1),
               "mfu": result.mfu, "resumed_from": result.resumed_from, "eval": result.eval}
    if result.phases:  # sequence-length phases (mixture.json's phase variants), trained in order
        summary["phases"] = [{**p, "losses": len(result.phase_losses.get(p["name"], []))} for p in result.phases]
    return StageResult(counts={"steps": result.step, "tokens_seen": result.tokens_seen},
                       timings={"tokens_per_s": round(result.tokens_per_s, 1)}, extra={"train": summary})


def train_work_folder(root: Path, cfg, mixture: Path, pack: Path) -> Path:
    """The folder a training run checkpoints into, one per (train config, mixture, pack): a killed run
    resumes from it, while a changed config or mixture starts afresh instead of meeting another run's
    checkpoints. Work folders of earlier configs (mixweave's own) are removed. A mixture with
    variants adds each variant's mixture and pack to the key (runs without keep theirs)."""
    from ...data.mixture_manifest import mixture_variants

    inputs = {"mixture": sha256_file(mixture), "pack": manifest_sha256(pack)}
    variants = mixture_variants(mixture, pack_root=pack)
    if variants:
        inputs["variants"] = {v.name: [sha256_file(v.mixture_path), manifest_sha256(v.pack_dir)] for v in variants}
    key = fingerprint("train-work", 1, to_plain(cfg), inputs)
    work = root / key[:16]
    if root.is_dir():
        for other in root.iterdir():
            if other != work and other.is_dir():
                shutil.rmtree(other)
    return work


STAGE = Stage("train", ("pack", "mix"), 1, lambda c: {"train": to_plain(c.train), "benchmarks": c.benchmarks},
              run_train_stage,
              extra_fingerprint=lambda c: sha256_file(c.benchmarks) if c.benchmarks and Path(c.benchmarks).is_file() else None,
              enabled=lambda c: c.train is not None, describe="a short training run on the mixture")
