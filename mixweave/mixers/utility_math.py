"""Mixer math on a utility table: per-benchmark normalisation and the risk diagonal of UtiliMax.

Every uncertainty the mixers use is expressed in the normalised units of the value they optimise:
``std``, ``se`` and the interval of a cell are divided by (interval: mapped with) the same
per-benchmark scale as its score, so ``se / scale`` is the standard error of the normalised utility.

The table itself (:class:`~mixweave.data.utility_table.UtilityTable`) and its reading and
validation live in :mod:`mixweave.data.utility_table`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from mixweave.data.utility_table import UtilityTable
from mixweave.errors import ConfigError, InputError

NORMALIZATIONS = ("minmax", "max", "none")
RISKS = ("identity", "diagonal", "se")


def normalize_utility(scores: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-benchmark normalisation; returns ``(normalised, scale)`` with ``scale`` per benchmark.

    ``minmax``: ``(u - min) / (max - min)``, so the best source scores 1 and the worst 0 on every
    benchmark (a benchmark on which all sources tie scores 1 everywhere). ``max``: ``u / max``
    (needs positive scores). ``none``: unchanged.
    """
    if how == "none":
        return scores.copy(), np.ones(scores.shape[1])
    if how == "minmax":
        lo, hi = scores.min(axis=0), scores.max(axis=0)
        scale = np.where(hi > lo, hi - lo, 1.0)
        return np.where(hi > lo, (scores - lo) / scale, 1.0), scale
    if how == "max":
        hi = scores.max(axis=0)
        if np.any(scores < 0) or np.any(hi <= 0):
            raise InputError("normalize='max' needs non-negative scores with a positive best score per "
                             "benchmark; use normalize='minmax'")
        return scores / hi, hi
    raise ConfigError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {how!r}")


def normalize_table_units(table: UtilityTable, how: str) -> tuple[UtilityTable, np.ndarray]:
    """``table`` in the units the mixer optimises: scores as :func:`normalize_utility`, ``std`` and
    ``se`` divided by the benchmark's scale, ``ci_low``/``ci_high`` mapped like the scores (``n``
    unchanged); returns ``(table, scale)``. Cost O(k m)."""
    normed, scale = normalize_utility(table.scores, how)
    offset = np.zeros_like(scale)  # normalised = (raw - offset) / scale
    if how == "minmax":
        lo, hi = table.scores.min(axis=0), table.scores.max(axis=0)
        offset = np.where(hi > lo, lo, lo - 1.0)  # all tied: every source scores 1

    def spread(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a / scale

    def value(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else (a - offset) / scale

    return replace(table, scores=normed, std=spread(table.std), se=spread(table.se),
                   ci_low=value(table.ci_low), ci_high=value(table.ci_high)), scale


def risk_diagonal(table: UtilityTable, scale: np.ndarray, risk: str) -> np.ndarray:
    """Diagonal of Sigma, per source: ones (``identity``), the mean over benchmarks of the
    normalised per-document variance ``(std_ij / scale_j) ** 2`` (``diagonal``), or of the
    normalised squared standard error ``(se_ij / scale_j) ** 2`` (``se``, the default when the
    table has standard errors).

    With ``se``, ``w^T Sigma w`` is the mean over benchmarks of the variance of the estimated
    mixture utility ``(U^T w)_j`` (independent errors): the risk term penalises leaning on
    estimates that are uncertain, not on sources whose documents merely vary. Cost O(k m)."""
    if risk == "identity":
        return np.ones(len(table.sources))
    if risk == "diagonal":
        if table.std is None:
            raise ConfigError("risk='diagonal' needs utility standard deviations: pass utility_std or a "
                              "long table with a 'std' column, or use risk='identity'")
        return np.mean((table.std / scale) ** 2, axis=1)
    if risk == "se":
        if table.se is None:
            raise ConfigError("risk='se' needs the standard error of each utility mean: a long table with an "
                              "'se' column (or 'std' and 'n'), as the utility stage writes; or use "
                              "risk='diagonal' (per-document std) or 'identity'")
        return np.mean((table.se / scale) ** 2, axis=1)
    raise ConfigError(f"risk must be one of {', '.join(RISKS)}, got {risk!r}")


def skill_column_weights(benchmarks: Sequence[str], skills: Mapping[str, str | None],
                         target: Mapping[str, float]) -> np.ndarray:
    """Per benchmark column j, the weight ``a_j = m * t_s / n_s`` of a target skill composition:
    ``m`` benchmarks, ``s`` = the skill of j, ``n_s`` = the benchmarks with skill s, ``t_s`` = the
    target share of s (normalised to sum 1). Each skill's columns then weigh ``m * t_s`` in all,
    instead of ``n_s`` (how many benchmarks it happens to have); ``a = 1`` when the target equals
    the benchmarks' own composition. A benchmark of a skill outside the target weighs 0. Cost O(m).

    ConfigError: a target skill no benchmark carries, an untagged benchmark, a bad share."""
    from mixweave.data.benchmarks import check_skill

    shares = normalized_target(target)
    untagged = [b for b in benchmarks if skills.get(b) is None]
    if untagged:
        raise ConfigError(f"target_skills needs a skill for every benchmark; untagged: {', '.join(untagged)} "
                          "(set benchmark_skills: {name: skill} in the run config or a 'skill' in its records)")
    counts = {s: sum(1 for b in benchmarks if skills[b] == s) for s in shares}
    missing = [s for s, n in counts.items() if n == 0 and shares[s] > 0]
    if missing:
        raise ConfigError(f"target_skills: no benchmark has skill {', '.join(missing)}; tag one with "
                          "benchmark_skills or drop it from target_skills")
    for b in benchmarks:
        check_skill(skills[b], f"benchmark_skills.{b}")
    m = len(benchmarks)
    return np.array([m * shares[skills[b]] / counts[skills[b]] if skills[b] in shares else 0.0
                     for b in benchmarks], dtype=float)


def normalized_target(target: Mapping[str, float]) -> dict[str, float]:
    """A target skill composition as shares summing to 1 (ConfigError for an unknown skill, a
    negative or non-finite share, or all zero)."""
    from mixweave.data.benchmarks import check_skill

    if not isinstance(target, Mapping) or not target:
        raise ConfigError(f"target_skills must be a mapping {{skill: share}}, got {target!r}")
    for skill, share in target.items():
        check_skill(skill, "target_skills")
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not np.isfinite(share) or share < 0:
            raise ConfigError(f"target_skills.{skill} must be a finite number >= 0, got {share!r}")
    total = float(sum(target.values()))
    if total <= 0:
        raise ConfigError("target_skills: the shares sum to 0; give at least one positive share")
    return {s: float(v) / total for s, v in target.items()}


def skill_groups(benchmarks: Sequence[str], skills: Mapping[str, str | None],
                 target: Mapping[str, float]) -> list[tuple[np.ndarray, float]]:
    """Per target skill with a positive share: (its benchmark column indices, its share), for
    weakest-link's per-skill worst benchmarks (checks as :func:`skill_column_weights`)."""
    skill_column_weights(benchmarks, skills, target)  # the same checks
    shares = normalized_target(target)
    return [(np.array([j for j, b in enumerate(benchmarks) if skills[b] == s]), share)
            for s, share in shares.items() if share > 0]
