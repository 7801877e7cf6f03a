"""Byte budgets (Byte Latent Transformer, Pagnoni et al. 2024): solve a mixture in bytes, hand it
to trainers in tokens.

A byte budget compares sources and tokenizers on what the text *is* (UTF-8 bytes) rather than on
how one tokenizer cuts it: code or non-Latin text costs more tokens per byte than English prose, so
the same token budget buys different amounts of text per source.

Algorithm: every method (UniMax, UtiliMax, weakest-link, ...) solves its usual program with each
source's size in bytes, ``b_i = n_i * r_i`` (``r_i`` = the source's bytes per token measured at
ingest; with a pack, ``n_i`` is its window tokens), and the budget in bytes ``B``; the result is
then stated in tokens, ``target_tokens_i = target_bytes_i / r_i``, ``budget_tokens = sum_i
target_tokens_i`` and ``weight_i = target_tokens_i / budget_tokens`` (the token share a sampler
draws). Epochs are unit-free: ``target_bytes_i / b_i = target_tokens_i / n_i``, so the epoch caps
and the epochs are the same in both units. Cost: the method's own, plus O(k).
Trade-off: the byte weights differ from the token weights wherever bytes per token differ between
sources; the token plan a trainer draws is exact, the byte figures rest on the ingest average.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from mixweave.errors import ConfigError, InputError
from mixweave.mixers.mixture import Mixture

UNITS = ("tokens", "bytes")


def check_unit(unit: Any) -> str:
    """``unit`` when it is 'tokens' or 'bytes', else one ConfigError line."""
    if unit not in UNITS:
        raise ConfigError(f"mix.unit {unit!r}: use tokens or bytes")
    return unit


def bytes_per_token(stats: Mapping[str, Any]) -> dict[str, float]:
    """Per source, bytes per token from stats.json (``bytes_per_token``, else n_bytes / n_tokens);
    InputError naming the source when neither is there or it is not a positive number."""
    out = {}
    for name, entry in stats["sources"].items():
        value = entry.get("bytes_per_token")
        if value is None and entry.get("n_bytes") is not None and entry.get("n_tokens"):
            value = float(entry["n_bytes"]) / float(entry["n_tokens"])
        if value is None or not math.isfinite(float(value)) or float(value) <= 0:
            raise InputError(f"stats.json: source {name} has no bytes per token (n_bytes / n_tokens = "
                             f"{entry.get('n_bytes')!r} / {entry.get('n_tokens')!r}); re-run the count stage")
        out[name] = float(value)
    return out


def stats_in_bytes(stats: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``stats`` whose ``n_tokens`` are the sources' sizes in bytes (n_tokens x bytes per
    token), for a solver that only reads ``n_tokens``."""
    rate = bytes_per_token(stats)
    sources = {name: {**entry, "n_tokens": float(entry["n_tokens"]) * rate[name]}
               for name, entry in stats["sources"].items()}
    return {**stats, "sources": sources}


def to_token_units(mixture: Mixture, rate: Mapping[str, float], n_tokens: Mapping[str, float]) -> Mixture:
    """A mixture solved over byte sizes (its ``budget_tokens``/``target_tokens`` are bytes) stated
    in tokens: ``target_tokens_i = target_bytes_i / r_i``, the budget their sum, weights the token
    shares; epochs, caps and bindings unchanged (unit-free)."""
    names = mixture.sources
    r = np.array([rate[n] for n in names], dtype=float)
    target = np.array([mixture.target_tokens[n] for n in names], dtype=float) / r
    budget = float(target.sum())
    if not budget > 0:
        raise InputError("the byte budget gives no tokens to any source")
    tokens = np.array([float(n_tokens[n]) for n in names])
    return Mixture(
        method=mixture.method, params=mixture.params, budget_tokens=budget,
        n_tokens=dict(zip(names, tokens.tolist())), weights=dict(zip(names, (target / budget).tolist())),
        target_tokens=dict(zip(names, target.tolist())), epochs=dict(zip(names, (target / tokens).tolist())),
        max_epochs=dict(mixture.max_epochs), binding=dict(mixture.binding), solver=mixture.solver,
        status=mixture.status, objective=mixture.objective, n_docs=dict(mixture.n_docs),
        paths=dict(mixture.paths), utility=dict(mixture.utility))


def solve_stats(stats: Mapping[str, Any], *, unit: str, budget_tokens: float, budget_bytes: float,
                solve: Any) -> tuple[Mixture, float]:
    """``solve(stats, budget)`` in the chosen unit; returns the mixture in tokens and the budget in
    the solved unit (0 budget = one pass over every source's tokens or bytes)."""
    check_unit(unit)
    if unit == "tokens":
        if budget_bytes:
            raise ConfigError("mix.budget_bytes is for mix.unit: bytes; set unit: bytes or give budget_tokens")
        budget = budget_tokens or float(sum(s["n_tokens"] for s in stats["sources"].values()))
        return solve(stats, budget), budget
    if budget_tokens:
        raise ConfigError("mix.unit: bytes takes its budget from mix.budget_bytes, not budget_tokens; "
                          "give budget_bytes (0 = one pass over every source's bytes)")
    in_bytes = stats_in_bytes(stats)
    budget = budget_bytes or float(sum(s["n_tokens"] for s in in_bytes["sources"].values()))
    mixture = solve(in_bytes, budget)
    n_tokens = {name: entry["n_tokens"] for name, entry in stats["sources"].items()}
    return to_token_units(mixture, bytes_per_token(stats), n_tokens), budget
