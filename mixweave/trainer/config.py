"""The trainer's settings: the ``train`` section of a run config and the arguments of ``train()``.

One frozen dataclass for every way of training (the run stage, ``mixweave train``, utility
ablations, the benchmark); it imports nothing heavy, so configs are validated without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mixweave.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    depth: int = 2
    steps: int | None = None  # None: exactly the plan (planned windows / windows per step)
    batch_size: int = 8  # windows per rank per micro-step
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int | None = None  # None: 5% of steps (at least 1)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0  # model init
    data_seed: int | None = None  # None: the mixture's seed
    holdout_windows: int = 16  # per source, at most 10% of it; 0 = no per-source eval
    log_interval: int = 10
    eval_interval: int | None = None  # None: eval at the end only
    checkpoint_interval: int | None = None  # None: checkpoint at the end (and at stop_after) only
    keep_checkpoints: int = 2
    device: str = "auto"
    compile: bool | None = None  # None: on CUDA only
    benchmarks: str | None = None  # benchmarks.jsonl
    benchmark_split: str | None = None
    max_examples_per_benchmark: int = 200
    eval_batch_size: int = 16
    stop_after: int | None = None  # stop (checkpointed) after this step, e.g. to test preemption
    peak_flops: float | None = None
    resume: bool = True
    batching: Literal["shuffle", "similarity"] = "shuffle"
    """Global batch order: a token-weighted shuffle, or similarity batching (Lory): each optimizer
    step's windows are consecutive windows of one source's ICP stream (trainer/sampler.py)."""

    def __post_init__(self) -> None:
        for name in ("depth", "batch_size", "grad_accum", "log_interval", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"train.{name} must be an integer >= 1, got {value!r}")
        for name in ("steps", "warmup_steps", "eval_interval", "checkpoint_interval", "stop_after"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < (0 if name == "warmup_steps" else 1)):
                raise ConfigError(f"train.{name} must be a positive integer or unset, got {value!r}")
        if not (self.lr > 0 and 0 <= self.min_lr_ratio <= 1 and self.grad_clip >= 0 and self.weight_decay >= 0):
            raise ConfigError("train: need lr > 0, 0 <= min_lr_ratio <= 1, grad_clip >= 0, weight_decay >= 0")
        if self.batching not in ("shuffle", "similarity"):
            raise ConfigError(f"train.batching must be shuffle or similarity, got {self.batching!r}")
        if self.holdout_windows < 0:
            raise ConfigError(f"train: holdout_windows must be >= 0, got {self.holdout_windows}")
