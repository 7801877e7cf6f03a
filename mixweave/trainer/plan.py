"""The window plan: how many windows of each source a run draws, from mixture.json + the pack.

A mixture states per-source ``target_tokens`` (weight x budget) and an epoch cap, counted on the
ingest statistics; the pack holds what survived dedup and packing, in windows of S training
positions. Everything downstream (every exporter, the sampler) works in whole windows, so the plan
converts once:

* ``N = round(budget_tokens / S)`` windows in all, shared out by largest remainder (Hamilton) over
  the quotas ``target_tokens_i / S`` -- so sum(T_i) = N exactly and |T_i - quota_i| < 1;
* a source may not be drawn more than ``floor(max_epochs_i * W_i)`` times (W_i = its windows in the
  pack). When dedup/packing left fewer tokens than the mixture was solved for, that limit can bind:
  the source is clipped to its cap, the shortfall is logged and recorded (``shortfall_tokens``),
  and no other source is inflated (their weights are the mixer's decision, not ours);
* a window counts S tokens whatever the pack's convention (S, or S+1 overlapping by one).

Cost: O(k) for k sources. The plan is a frozen value; ``to_dict()`` goes into every export
manifest and checkpoint (requested *and* realised tokens/epochs per source).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mixweave.data.manifest import manifest_sha256, sha256_file
from mixweave.data.mixture_manifest import read_mixture_manifest
from mixweave.data.windows import WindowsInfo, windows_info
from mixweave.errors import InputError

log = logging.getLogger(__name__)

CAP_SLACK = 1e-9  # relative slack when turning max_epochs * W into a whole number of windows


@dataclass(frozen=True)
class SourcePlan:
    """One source: what the mixture asked for and how many windows the run draws."""

    name: str
    n_windows: int  # windows available to draw from (pack windows minus any held-out ones)
    requested_tokens: float  # the mixture's target_tokens
    target_windows: int  # windows the run draws (repetition included)
    weight: float  # the mixture's weight (share of the budget)
    max_epochs: float | None

    def realized_tokens(self, seq_len: int) -> int:
        return self.target_windows * seq_len

    @property
    def epochs(self) -> float:
        return self.target_windows / self.n_windows if self.n_windows else 0.0


@dataclass(frozen=True)
class MixturePlan:
    """Per-source window targets for one run (module docstring)."""

    seq_len: int
    plus_one: bool
    tokenizer: dict
    seed: int
    budget_tokens: float
    sources: tuple[SourcePlan, ...]
    mixture_sha256: str = ""
    pack_sha256: str = ""

    @property
    def window_tokens(self) -> int:
        return self.seq_len + int(self.plus_one)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sources)

    @property
    def target_windows(self) -> np.ndarray:
        return np.array([s.target_windows for s in self.sources], dtype=np.int64)

    @property
    def n_windows(self) -> np.ndarray:
        return np.array([s.n_windows for s in self.sources], dtype=np.int64)

    @property
    def total_windows(self) -> int:
        return int(self.target_windows.sum())

    @property
    def realized_weights(self) -> dict[str, float]:
        """Token shares the run realises (what relative-weight trainers are given)."""
        total = max(self.total_windows, 1)
        return {s.name: s.target_windows / total for s in self.sources}

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.tokenizer.get("dtype", "uint32"))

    def source(self, name: str) -> SourcePlan:
        for s in self.sources:
            if s.name == name:
                return s
        raise InputError(f"source {name!r} is not in this plan; sources: {', '.join(self.names)}")

    def to_dict(self) -> dict[str, Any]:
        S = self.seq_len
        weights = self.realized_weights
        return {
            "seq_len": S, "plus_one": self.plus_one, "seed": self.seed,
            "budget_tokens": self.budget_tokens, "total_windows": self.total_windows,
            "realized_tokens": self.total_windows * S,
            "mixture_sha256": self.mixture_sha256, "pack_sha256": self.pack_sha256,
            "sources": {s.name: {
                "n_windows": s.n_windows, "requested_tokens": s.requested_tokens,
                "target_windows": s.target_windows, "realized_tokens": s.realized_tokens(S),
                "shortfall_tokens": max(0.0, s.requested_tokens - s.realized_tokens(S)),
                "weight": s.weight, "realized_weight": weights[s.name],
                "epochs": s.epochs, "max_epochs": s.max_epochs,
            } for s in self.sources},
        }


def hamilton(quotas: Sequence[float], total: int) -> np.ndarray:
    """Integers summing to ``total`` with ``|x_i - quota_i| < 1`` (largest remainder).

    ``quotas`` should sum to ``total``; any difference is absorbed by the largest remainders.
    """
    q = np.maximum(np.asarray(quotas, dtype=np.float64), 0.0)
    base = np.floor(q).astype(np.int64)
    short = int(total - base.sum())
    if short > 0:
        order = np.argsort(-(q - base), kind="stable")
        base[order[:short]] += 1
    elif short < 0:  # quotas summed above total (float noise): take from the smallest remainders
        order = np.argsort(q - base, kind="stable")
        for i in order:
            if short == 0:
                break
            if base[i] > 0:
                base[i] -= 1
                short += 1
    return base


def _check_compatible(mixture: Mapping[str, Any], info: WindowsInfo, where: str) -> None:
    if int(mixture["seq_len"]) != info.seq_len:
        raise InputError(f"{where}: the mixture is for seq_len {mixture['seq_len']} but the pack has windows of "
                         f"seq_len {info.seq_len}; re-run the pack stage with seq_len={mixture['seq_len']} "
                         "or re-mix with the pack's seq_len")
    m_sha, p_sha = mixture["tokenizer"].get("sha256"), info.tokenizer.get("sha256")
    if m_sha and p_sha and m_sha != p_sha:
        raise InputError(f"{where}: the mixture and the pack were made with different tokenizers "
                         f"({mixture['tokenizer'].get('name')} {m_sha[:12]} vs {info.tokenizer.get('name')} "
                         f"{p_sha[:12]}); re-run mix or pack with the same tokenizer")
    window = mixture.get("window") or {}
    m_sink = window.get("sink_id")
    if (m_sink is None) != (info.sink_id is None) or (m_sink is not None and int(m_sink) != info.sink_id):
        raise InputError(f"{where}: the mixture's windows have attention-sink token {m_sink} but the pack's have "
                         f"{info.sink_id} (order.sink_token); re-run mix on this pack")


def plan_windows(mixture: Mapping[str, Any], info: WindowsInfo, *,
                 available: Mapping[str, int] | None = None,
                 mixture_sha256: str = "", pack_sha256: str = "", where: str = "plan") -> MixturePlan:
    """The plan for a validated mixture dict over a pack (``available``: windows per source that
    may be drawn, default all of the pack's)."""
    _check_compatible(mixture, info, where)
    S = info.seq_len
    names = [s["name"] for s in mixture["sources"]]
    missing = [n for n, s in zip(names, mixture["sources"]) if n not in info.sources and s["target_tokens"] > 0]
    if missing:
        raise InputError(f"{where}: the mixture wants tokens from {', '.join(missing)} but the pack has no windows "
                         f"for them (pack sources: {', '.join(sorted(info.sources)) or 'none'}); "
                         "pack those sources or re-mix without them")
    extra = sorted(set(info.sources) - set(names))
    if extra:
        log.info("%s: pack sources not in the mixture are ignored: %s", where, ", ".join(extra))
    budget = float(mixture["budget_tokens"])
    total = int(round(budget / S))
    if total < 1:
        raise InputError(f"{where}: budget_tokens {budget:g} is less than one window of {S} tokens; "
                         "raise the budget or use a shorter seq_len")
    quotas = [float(s["target_tokens"]) / S for s in mixture["sources"]]
    targets = hamilton(quotas, total)
    plans, clipped = [], []
    for src, t in zip(mixture["sources"], targets):
        name = src["name"]
        pack_w = int(info.sources.get(name, {}).get("n_windows", 0))
        w = int(available[name]) if available is not None and name in available else pack_w
        if w > pack_w or w < 0:
            raise InputError(f"{where}: source {name} has {pack_w} windows, cannot make {w} available")
        cap = src.get("max_epochs")
        if t > 0 and w == 0:
            raise InputError(f"{where}: source {name} has no windows to draw {t} from; "
                             "pack it (it may have been fully deduplicated) or re-mix without it")
        if cap is not None:
            limit = int(math.floor(float(cap) * w * (1 + CAP_SLACK)))
            if t > limit:
                if t - limit > 1:  # one window is rounding, more is a real shortfall
                    clipped.append(f"{name} ({t} -> {limit} windows, cap {cap:g} epochs of {w})")
                t = limit
        plans.append(SourcePlan(name=name, n_windows=w, requested_tokens=float(src["target_tokens"]),
                                target_windows=int(t), weight=float(src["weight"]),
                                max_epochs=None if cap is None else float(cap)))
    if clipped:
        log.warning("%s: the pack holds fewer tokens than the mixture was solved for; clipped to the epoch "
                    "cap: %s. Re-run mix on the pack's token counts to re-balance.", where, "; ".join(clipped))
    if sum(p.target_windows for p in plans) < 1:
        raise InputError(f"{where}: the plan draws no windows at all; check the mixture's budget and caps")
    return MixturePlan(seq_len=S, plus_one=info.plus_one, tokenizer=dict(info.tokenizer),
                       seed=int(mixture.get("seed", 0)), budget_tokens=budget, sources=tuple(plans),
                       mixture_sha256=mixture_sha256, pack_sha256=pack_sha256)


def load_plan(pack_dir: str | Path, mixture_path: str | Path, *,
              holdout: Mapping[str, int] | None = None) -> MixturePlan:
    """Read mixture.json (validated) and the pack manifest; ``holdout``: windows per source kept
    out of training (the last ones of each source), e.g. for evaluation."""
    mixture = read_mixture_manifest(mixture_path)
    if mixture.get("variants"):  # sequence-length phases / bts sets: each variant is planned from its own file
        log.info("%s: this plan is the overall mixture's; its %d variant(s) are planned from their own mixture files "
                 "(mixture_variants)", mixture_path, len(mixture["variants"]))
    elif mixture.get("phases"):
        log.warning("%s has %d phases; this plan uses the overall mixture (one blend over the whole run). "
                    "Write one mixture per phase for phase-wise blends.", mixture_path, len(mixture["phases"]))
    info = windows_info(pack_dir)
    available = None
    if holdout:
        available = {n: max(0, int(s["n_windows"]) - int(holdout.get(n, 0))) for n, s in info.sources.items()}
    return plan_windows(mixture, info, available=available, mixture_sha256=sha256_file(mixture_path),
                        pack_sha256=manifest_sha256(pack_dir), where=str(mixture_path))


def single_source_plan(info: WindowsInfo, source: str, tokens: float, *, seed: int = 0,
                       n_windows: int | None = None, pack_sha256: str = "") -> MixturePlan:
    """All of ``tokens`` from one source (uncapped): the plan of a per-source ablation run."""
    if source not in info.sources:
        raise InputError(f"source {source!r} is not in the pack; sources: {', '.join(sorted(info.sources))}")
    w = int(info.sources[source]["n_windows"]) if n_windows is None else int(n_windows)
    t = max(1, int(round(tokens / info.seq_len)))
    if w < 1:
        raise InputError(f"source {source!r} has no windows to train on")
    plan = SourcePlan(name=source, n_windows=w, requested_tokens=float(tokens), target_windows=t,
                      weight=1.0, max_epochs=None)
    return MixturePlan(seq_len=info.seq_len, plus_one=info.plus_one, tokenizer=dict(info.tokenizer), seed=seed,
                       budget_tokens=float(t * info.seq_len), sources=(plan,), pack_sha256=pack_sha256)
