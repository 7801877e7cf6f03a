"""Ablation utility: train one small model per source under a FLOPs budget, score it per benchmark.

For every source (and seed) a GPT of the given ``depth`` is trained from scratch on that source
alone for ``steps = flops_budget / (flops_per_token * tokens_per_step)`` steps -- the same compute
for every source, with repetition when a source is small -- and evaluated on the benchmark dev
text (answer-token loss given the prompt, :mod:`mixweave.trainer.evaluate`).

Utility = ``-loss`` (higher is better; UtiliMax's default per-benchmark min-max normalisation
makes the scale irrelevant). With more than one seed ``std`` is the standard deviation over seeds
and ``se = std / sqrt(seeds)``; with one seed ``se`` is the standard error of the mean loss over
the benchmark's examples and ``std = se * sqrt(n)`` their per-example spread. The result is what
:mod:`mixweave.data.utility_table` reads: ``scores``, ``std`` and ``se`` as wide DataFrames (index
source, one column per benchmark) or ``long()`` (source, benchmark, score, std, se, loss, n),
written to ``out_dir/utility.parquet``.

Cost: sources x seeds training runs of ``steps`` steps each (the windows are loaded once).
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from mixweave.data.manifest import manifest_sha256, write_json_atomic
from mixweave.data.windows import windows_info
from mixweave.errors import ConfigError, InputError
from mixweave.trainer.dataset import PackDataset
from mixweave.trainer.model import GPT, GPTConfig
from mixweave.trainer.plan import single_source_plan
from mixweave.trainer.train import TrainConfig, train_plan

log = logging.getLogger(__name__)


@dataclass
class AblationResult:
    scores: pd.DataFrame  # source x benchmark, utility = -loss
    std: pd.DataFrame  # source x benchmark
    losses: pd.DataFrame  # source x benchmark, mean eval loss
    n_examples: dict[str, int] = field(default_factory=dict)
    runs: dict[str, Any] = field(default_factory=dict)
    se: pd.DataFrame | None = None  # source x benchmark, standard error of the score

    def long(self) -> pd.DataFrame:
        """Long form: source, benchmark, score, std, se, loss, n (what ``read_utility_table`` reads)."""
        rows = [{"source": s, "benchmark": b, "score": float(self.scores.loc[s, b]), "std": float(self.std.loc[s, b]),
                 **({"se": float(self.se.loc[s, b])} if self.se is not None else {}),
                 "loss": float(self.losses.loc[s, b]), "n": int(self.n_examples.get(b, 0))}
                for s in self.scores.index for b in self.scores.columns]
        return pd.DataFrame(rows)


def ablation_utility(pack_dir: str | Path, benchmarks: str | Path, out_dir: str | Path, *, flops_budget: float,
                     depth: int = 2, sources: Sequence[str] | None = None, seeds: Sequence[int] = (0,),
                     batch_size: int = 8, lr: float = 3e-3, benchmark_split: str | None = None,
                     max_examples_per_benchmark: int = 200, device: str = "auto",
                     **train_overrides: Any) -> AblationResult:
    """Per-source ablations under one FLOPs budget -> utility table (module docstring)."""
    if not flops_budget or flops_budget <= 0:
        raise ConfigError(f"flops_budget must be > 0, got {flops_budget!r}")
    if not seeds:
        raise ConfigError("seeds must name at least one seed")
    info = windows_info(pack_dir)
    names = list(sources) if sources is not None else sorted(info.sources)
    unknown = [n for n in names if n not in info.sources]
    if unknown:
        raise InputError(f"{pack_dir} has no windows for {', '.join(unknown)}; "
                         f"it has {', '.join(sorted(info.sources))}")
    model = GPT(GPTConfig.from_depth(depth, vocab_size=int(info.tokenizer["vocab_size"]), seq_len=info.seq_len))
    positions = batch_size * (info.window_tokens - 1)
    steps = int(flops_budget // (model.flops_per_token(info.seq_len) * positions))
    if steps < 1:
        need = model.flops_per_token(info.seq_len) * positions
        raise ConfigError(f"flops_budget {flops_budget:.3g} is below one step of a depth-{depth} model "
                          f"({need:.3g} FLOPs); raise it or lower depth/batch_size")
    params = model.num_params()
    del model
    out = Path(out_dir)
    dataset = PackDataset(pack_dir, names)
    pack_sha = manifest_sha256(pack_dir)
    losses: dict[tuple[str, str], list[float]] = {}
    sems: dict[tuple[str, str], float] = {}
    n_examples: dict[str, int] = {}
    runs: dict[str, Any] = {}
    for name in names:
        for seed in seeds:
            plan = single_source_plan(info, name, steps * batch_size * info.seq_len, seed=seed, pack_sha256=pack_sha)
            cfg = TrainConfig(depth=depth, steps=steps, batch_size=batch_size, lr=lr, seed=seed, data_seed=seed,
                              holdout_windows=0, benchmarks=str(benchmarks), benchmark_split=benchmark_split,
                              max_examples_per_benchmark=max_examples_per_benchmark, device=device,
                              log_interval=max(1, steps // 4), **train_overrides)
            result = train_plan(plan, pack_dir, out / name / f"seed-{seed}", cfg, dataset=dataset)
            runs[f"{name}/seed-{seed}"] = {"steps": result.step, "tokens": result.tokens_seen,
                                           "epochs": plan.sources[0].epochs, "final_train_loss": result.losses[-1]
                                           if result.losses else None}
            for bench, row in result.eval.get("benchmarks", {}).items():
                losses.setdefault((name, bench), []).append(row["loss"])
                sems[(name, bench)] = row["sem"]
                n_examples[bench] = row["n"]
            log.info("ablation %s seed %d: %s", name, seed,
                     " ".join(f"{b}={r['loss']:.3f}" for b, r in result.eval.get("benchmarks", {}).items()))
    benches = sorted(n_examples)
    mean = pd.DataFrame([[float(np.mean(losses[(s, b)])) for b in benches] for s in names],
                        index=names, columns=benches)
    if len(seeds) > 1:
        std = pd.DataFrame([[float(np.std(losses[(s, b)], ddof=1)) for b in benches] for s in names],
                           index=names, columns=benches)
        se = std / np.sqrt(len(seeds))
    else:
        se = pd.DataFrame([[sems[(s, b)] for b in benches] for s in names], index=names, columns=benches)
        std = se * np.sqrt(pd.Series({b: n_examples[b] for b in benches}))
    mean.index.name = std.index.name = se.index.name = "source"
    result = AblationResult(scores=-mean, std=std, losses=mean, n_examples=n_examples, runs=runs, se=se)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".utility.parquet.tmp-{uuid.uuid4().hex[:8]}"
    result.long().to_parquet(tmp, index=False)
    os.replace(tmp, out / "utility.parquet")
    write_json_atomic(out / "ablation.json", {
        "flops_budget": flops_budget, "depth": depth, "params": params, "steps": steps, "batch_size": batch_size,
        "tokens_per_run": steps * positions, "seeds": list(seeds), "sources": names, "benchmarks": benches,
        "pack_sha256": pack_sha, "runs": runs, "score": "-loss (answer-token NLL given the prompt)"})
    return result
