"""Branch-train-stitch mixtures (BTS, Zhang et al. 2025; Branch-Train-MiX, Sukhbaatar et al. 2024).

BTS trains one seed model, branches it into domain experts (each continually pretrained on a
mixture that up-weights its domain), then stitches the experts into one model on a small mixture
of the expert domains. mixweave writes the data side: from the run's solved (seed) mixture, one
mixture per expert and one stitch mixture, each over the main pack. It trains no expert itself.

Algorithm: :func:`expert_weights` / :func:`stitch_weights` move the seed's weights between groups
of sources (an expert's domain vs the rest; one group per expert domain) and keep the seed's
ratios inside each group; :func:`fit_under_caps` then makes the weights feasible under the epoch
caps at the variant's own budget by capped water-filling, first over the groups (a group whose
sources are full passes its excess to the other groups in proportion to their targets), then
inside each group (as every mixer does); the result goes through the manual method of
:func:`~mixweave.mixers.api.solve_with_caps`, so caps, binding labels and error messages are the
common ones. Cost: O(k log k) per variant for k sources.
Trade-off: each variant is capped on its own (max_epochs per training run); a source repeated by
the seed run and again by an expert is counted per run, not summed: lower max_epochs if the
repetitions across the seed and the expert runs must stay under one cap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mixweave.data.manifest import check_name
from mixweave.data.typed import from_dict, name_list
from mixweave.errors import ConfigError, InfeasibleError
from mixweave.mixers.capping import water_fill, weight_caps
from mixweave.mixers.mixture import Mixture, fmt_tokens, resolve_max_epochs, source_columns

#: Variant names of the stitch mixture and the prefix of each expert's (``expert-<name>``).
STITCH = "stitch"
EXPERT_PREFIX = "expert-"
#: Folder and file names a variant may not take beside the export formats (checked at config time).
RESERVED_NAMES = ("variants", "phases", "proxies", "mixture", "main", "all")


@dataclass(frozen=True, kw_only=True)
class BtsExpert:
    """One expert: its domain's sources and (optionally) its own domain share."""

    sources: tuple[str, ...]
    """The expert's domain: sources of the run (each in at most one expert)."""
    domain_share: float | None = None
    """Share of the expert's budget that its domain gets (0 < x <= 1); None = mix.bts.domain_share."""


@dataclass(frozen=True, kw_only=True)
class BtsConfig:
    """``mix.bts``: branch-train-stitch mixtures derived from the run's (seed) mixture."""

    experts: dict[str, Any]
    """{expert: [sources]} or {expert: {sources: [...], domain_share: 0.8}}; written as
    mix/variants/expert-<expert>.json and exported to export/expert-<expert>/<format>/."""
    domain_share: float = 0.5
    """Default share of an expert's budget that goes to its domain's sources (0 < x <= 1)."""
    expert_budget_tokens: float
    """Training tokens of each expert's continued pretraining (>= 1)."""
    stitch_budget_tokens: float
    """Training tokens of the stitch step (>= 1): a small mixture of the expert domains only."""
    stitch: Literal["equal", "seed"] = "equal"
    """How the stitch set shares the expert domains: equal (each expert domain 1/n) or seed (in
    proportion to the seed mixture's weight on each domain)."""

    def __post_init__(self) -> None:
        if not isinstance(self.experts, Mapping) or not self.experts:
            raise ConfigError("mix.bts.experts must name at least one expert: {expert: [sources]}")
        experts: dict[str, BtsExpert] = {}
        owner: dict[str, str] = {}
        for name, spec in self.experts.items():
            where = f"mix.bts.experts.{name}"
            check_name(str(name), "mix.bts expert name", ConfigError)
            if isinstance(spec, BtsExpert):
                expert = spec
            elif isinstance(spec, Mapping):
                expert = from_dict(BtsExpert, spec, where)
            else:
                expert = from_dict(BtsExpert, {"sources": spec}, where)
            for source in expert.sources:
                if source in owner:
                    if owner[source] == name:
                        raise ConfigError(f"{where}: source {source} is listed twice; list it once")
                    raise ConfigError(f"mix.bts.experts: source {source} is in both {owner[source]} and {name}; "
                                      "give each source to at most one expert")
                owner[source] = str(name)
            share = expert.domain_share
            if share is not None and not 0 < share <= 1:
                raise ConfigError(f"{where}.domain_share must be in (0, 1], got {share:g}")
            experts[str(name)] = expert
        object.__setattr__(self, "experts", experts)
        if not 0 < self.domain_share <= 1:
            raise ConfigError(f"mix.bts.domain_share must be in (0, 1] (the domain's share of an expert's "
                              f"budget), got {self.domain_share:g}")
        for key in ("expert_budget_tokens", "stitch_budget_tokens"):
            if not getattr(self, key) >= 1:
                raise ConfigError(f"mix.bts.{key} must be at least 1 token, got {getattr(self, key):g}")

    def share(self, expert: str) -> float:
        """The expert's domain share (its own, else the default)."""
        own = self.experts[expert].domain_share
        return self.domain_share if own is None else own

    def domains(self) -> dict[str, tuple[str, ...]]:
        return {name: e.sources for name, e in self.experts.items()}

    def variant_names(self) -> list[str]:
        """Training order: the experts (as configured), then the stitch set."""
        return [EXPERT_PREFIX + name for name in self.experts] + [STITCH]


def check_bts(bts: BtsConfig | None, sources: Sequence[str], reserved: Sequence[str] = (),
              seq_len: int | None = None) -> None:
    """Checks of mix.bts that need the run's sources, the export formats (``reserved``: names a
    variant folder may not take, e.g. every format and alias) and the window length (``seq_len``:
    each budget must hold at least one window)."""
    if bts is None:
        return
    for key in ("expert_budget_tokens", "stitch_budget_tokens"):
        if seq_len is not None and getattr(bts, key) < seq_len:
            raise ConfigError(f"mix.bts.{key} {getattr(bts, key):g} is less than one window of {seq_len} tokens "
                              "(order.seq_len); give at least one window")
    known = list(sources)
    for name, expert in bts.experts.items():
        unknown = [s for s in expert.sources if s not in known]
        if unknown:
            raise ConfigError(f"mix.bts.experts.{name}: unknown sources {name_list(unknown)}; the run's sources are "
                              f"{name_list(known)}")
        if set(expert.sources) == set(known) and bts.share(name) < 1:
            raise ConfigError(f"mix.bts.experts.{name} covers every source, so its domain_share "
                              f"{bts.share(name):g} has no other sources to give the rest to; set its domain_share "
                              "to 1 or leave a source out of its domain")
    taken = {n.lower() for n in (*reserved, *RESERVED_NAMES)}
    for variant in bts.variant_names():
        check_name(variant, "mix.bts variant name", ConfigError)
        if variant.lower() in taken:
            raise ConfigError(f"mix.bts: the variant name {variant} clashes with an export format or a reserved "
                              "folder name; rename the expert")


# ------------------------------------------------------------------------------ the pure cores
def _split(seed: np.ndarray, idx: np.ndarray, total: float) -> np.ndarray:
    """``total`` over the sources ``idx`` in proportion to their seed weights (equally when the
    seed gives them nothing)."""
    part = seed[idx]
    mass = float(part.sum())
    return total * (part / mass if mass > 0 else np.full(len(idx), 1.0 / len(idx)))


def _seed_array(seed_weights: Mapping[str, float]) -> tuple[list[str], np.ndarray]:
    names = list(seed_weights)
    seed = np.array([float(seed_weights[n]) for n in names])
    if not len(names) or np.any(~np.isfinite(seed)) or np.any(seed < 0) or seed.sum() <= 0:
        raise ConfigError(f"bts: the seed weights must be finite, >= 0 and not all zero, got {dict(seed_weights)}")
    return names, seed


def _indices(names: list[str], domain: Sequence[str], where: str) -> np.ndarray:
    position = {n: i for i, n in enumerate(names)}
    unknown = [s for s in domain if s not in position]
    if unknown or not domain:
        raise ConfigError(f"bts {where}: {'unknown sources ' + name_list(unknown) if unknown else 'no sources'}; "
                          f"the seed mixture's sources are {name_list(names)}")
    return np.array([position[s] for s in dict.fromkeys(domain)])


def expert_weights(seed_weights: Mapping[str, float], domain: Sequence[str], domain_share: float) -> dict[str, float]:
    """An expert's weights before the caps: the domain's sources share ``domain_share`` in
    proportion to their seed weights, the other sources share ``1 - domain_share`` in proportion to
    theirs. A group the seed gives nothing in total is split equally among its sources (a source
    the seed drops inside a group it does weight stays at 0). O(k)."""
    names, seed = _seed_array(seed_weights)
    if not 0 < domain_share <= 1:
        raise ConfigError(f"bts: domain_share must be in (0, 1], got {domain_share!r}")
    dom = _indices(names, domain, "expert domain")
    rest = np.setdiff1d(np.arange(len(names)), dom)
    if not len(rest) and domain_share < 1:
        raise ConfigError("bts: the expert's domain covers every source, so there is nothing to give "
                          f"1 - domain_share ({1 - domain_share:g}) to; set domain_share to 1")
    w = np.zeros(len(names))
    w[dom] = _split(seed, dom, domain_share)
    if len(rest):
        w[rest] = _split(seed, rest, 1.0 - domain_share)
    return dict(zip(names, map(float, w)))


def stitch_weights(seed_weights: Mapping[str, float], experts: Mapping[str, Sequence[str]],
                   how: str = "equal") -> dict[str, float]:
    """The stitch set's weights before the caps: only the expert domains' sources. ``how``: equal
    (each expert domain 1/n) or seed (each domain in proportion to its seed weight; equal when the
    seed gives every expert domain nothing). Inside a domain, in proportion to the seed weights
    (equally when the seed gives the domain nothing); sources of no expert get 0. O(k)."""
    names, seed = _seed_array(seed_weights)
    if how not in ("equal", "seed"):
        raise ConfigError(f"bts: stitch must be equal or seed, got {how!r}")
    if not experts:
        raise ConfigError("bts: the stitch set needs at least one expert domain")
    groups = [_indices(names, d, f"expert {e}") for e, d in experts.items()]
    shared = sorted({names[i] for g in groups for i in g if sum(i in h for h in groups) > 1})
    if shared:
        raise ConfigError(f"bts: sources {name_list(shared)} are in more than one expert domain; give each to one expert")
    mass = np.array([seed[g].sum() for g in groups])
    shares = mass / mass.sum() if how == "seed" and mass.sum() > 0 else np.full(len(groups), 1.0 / len(groups))
    w = np.zeros(len(names))
    for g, share in zip(groups, shares):
        w[g] = _split(seed, g, float(share))
    return dict(zip(names, map(float, w)))


def _fill(pref: np.ndarray, caps: np.ndarray, total: float) -> np.ndarray:
    """``total`` over sources under ``caps``, in proportion to ``pref``: the sources with a
    positive preference first; only if their caps cannot hold ``total`` do the others take the
    rest, equally under their caps."""
    out = np.zeros(len(pref))
    if total <= 0 or not len(pref):
        return out
    pos = pref > 0
    room = float(np.sum(caps[pos]))
    if room >= total:
        out[pos] = water_fill(pref[pos], caps[pos], total)
        return out
    out[pos] = caps[pos]
    rest = ~pos
    out[rest] = water_fill(np.ones(int(rest.sum())), caps[rest], total - room)
    return out


def fit_under_caps(weights: np.ndarray, groups: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Feasible weights (sum 1, ``w <= caps``) as close to ``weights`` as group-wise water-filling
    gets: each group (``groups[i] >= 0``; -1 = never used) keeps its total share unless its
    sources' caps cannot hold it, then its excess goes to the other groups in proportion to their
    shares (to groups with no share only when needed); inside a group, :func:`_fill`. Requires
    ``sum(caps[groups >= 0]) >= 1`` (InfeasibleError otherwise). O(k log k)."""
    weights, groups, caps = (np.asarray(a, dtype=float) for a in (weights, groups, caps))
    labels = [g for g in dict.fromkeys(groups.tolist()) if g >= 0]
    members = [np.flatnonzero(groups == g) for g in labels]
    target = np.array([weights[m].sum() for m in members])
    room = np.array([caps[m].sum() for m in members])
    if room.sum() < 1.0 * (1 - 1e-12):
        raise InfeasibleError(f"the sources' epoch caps hold only {room.sum():.4g} of the budget")
    totals = _fill(target, np.minimum(room, 1.0), 1.0)
    out = np.zeros(len(weights))
    for m, total in zip(members, totals):
        out[m] = _fill(weights[m], caps[m], float(total))
    return out


def capped_variant(sources: Mapping[str, Any], weights: Mapping[str, float], groups: Mapping[str, int],
                   budget_tokens: float, max_epochs: float | Mapping[str, float] | None, *,
                   method: str, params: Mapping[str, Any], what: str) -> Mixture:
    """A variant's Mixture: ``weights`` (pre-cap, by source) made feasible by
    :func:`fit_under_caps` at ``budget_tokens`` and solved through the manual method (so binding
    labels and checks are every mixer's), then named ``method`` with ``params`` recorded."""
    from mixweave.mixers.api import solve_with_caps

    names, n_tokens, _, _ = source_columns(sources)
    caps = resolve_max_epochs(max_epochs, names)
    group = np.array([groups.get(n, -1) for n in names])
    usable = group >= 0
    capacity = float(np.sum(np.where(usable, caps * n_tokens, 0.0)))
    if budget_tokens > capacity * (1 + 1e-12):
        held = ", ".join(n for n, u in zip(names, usable) if u)
        raise InfeasibleError(f"bts {what}: {fmt_tokens(budget_tokens)} tokens need more than its sources ({held}) "
                              f"hold under max_epochs: at most {fmt_tokens(capacity)} tokens; lower its budget, raise "
                              "mix.max_epochs, or add data")
    w = fit_under_caps(np.array([float(weights[n]) for n in names]), group,
                       weight_caps(n_tokens, caps, float(budget_tokens)))
    mixture = solve_with_caps(sources, budget_tokens, "manual", caps, {"weights": dict(zip(names, map(float, w)))})
    return dataclasses.replace(mixture, method=method, params={**mixture.params, **params,
                                                               "weights_before_caps": dict(weights)})


def bts_mixtures(sources: Mapping[str, Any], seed_weights: Mapping[str, float], bts: BtsConfig,
                 max_epochs: float | Mapping[str, float] | None, *, seed_method: str = "") -> dict[str, Mixture]:
    """Every BTS variant's Mixture by variant name (``expert-<name>`` in config order, then
    ``stitch``), over ``sources`` (name -> n_tokens or {n_tokens, n_docs, paths}: the main pack's
    sizes) from the seed mixture's weights."""
    out: dict[str, Mixture] = {}
    for name, expert in bts.experts.items():
        share = bts.share(name)
        pre = expert_weights(seed_weights, expert.sources, share)
        groups = {n: 0 if n in expert.sources else 1 for n in pre}
        mixture = capped_variant(
            sources, pre, groups, bts.expert_budget_tokens, max_epochs, method="bts_expert", what=f"expert {name}",
            params={"expert": name, "domain": list(expert.sources), "domain_share": share, "seed_method": seed_method})
        achieved = sum(mixture.weights[s] for s in expert.sources)
        out[EXPERT_PREFIX + name] = dataclasses.replace(mixture, params={**mixture.params,
                                                                          "domain_share_after_caps": float(achieved)})
    domains = bts.domains()
    pre = stitch_weights(seed_weights, domains, bts.stitch)
    groups = {s: i for i, d in enumerate(domains.values()) for s in d}
    out[STITCH] = capped_variant(
        sources, pre, groups, bts.stitch_budget_tokens, max_epochs, method="bts_stitch", what="stitch set",
        params={"stitch": bts.stitch, "experts": {e: list(d) for e, d in domains.items()}, "seed_method": seed_method})
    return out


def bts_table(seed: Mapping[str, Any], variants: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """The report's bts table from mixture.json dicts: one row per source with the seed's and each
    variant's weight and target tokens (``variants``: name -> its mixture.json, experts then stitch),
    and a last row with each mixture's budget."""
    names = [s["name"] for s in seed["sources"]]
    mixtures = {"seed": seed, **variants}
    headers = ["source"] + [f"{label} {what}" for label in mixtures for what in ("weight", "tokens")]
    rows: list[list[Any]] = []
    by_source = {label: {s["name"]: s for s in m["sources"]} for label, m in mixtures.items()}
    for name in names:
        row: list[Any] = [name]
        for label in mixtures:
            s = by_source[label].get(name)
            row += ["-", "-"] if s is None else [round(float(s["weight"]), 4), round(float(s["target_tokens"]))]
        rows.append(row)
    rows.append(["budget"] + [v for m in mixtures.values() for v in ("", round(float(m["budget_tokens"])))])
    return headers, rows
