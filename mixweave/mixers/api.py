"""``solve``: one entry point over every mixing method, and ``mix_from_stats`` for the CLI.

Each method is a pure function in its own module; this module validates inputs, resolves and logs
defaults, checks the epoch caps, calls the function and packs the result into a :class:`Mixture`.

``max_epochs`` is a cap on how often a source may be repeated: one number, a mapping per source, or
None. For ``unimax``, ``utilimax`` and ``weakest_link`` (which are defined by their cap) None means
the default of 4 epochs (Muennighoff et al.; logged); for the other methods None means uncapped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mixweave.data.utility_table import coerce_utility
from mixweave.errors import ConfigError, InputError
from mixweave.mixers import capping
from mixweave.mixers.manual import manual_weights
from mixweave.mixers.mixture import (BUDGET_SHARE, NONE, Mixture, SourceColumn, binding_array,
                                     caps_as_dict, caps_as_list, check_budget, is_number,
                                     resolve_max_epochs, source_columns)
from mixweave.mixers.proportional import proportional_weights
from mixweave.mixers.temperature import temperature_weights
from mixweave.mixers.uniform import uniform_weights
from mixweave.mixers.unimax import unimax_weights
from mixweave.mixers.utility_math import normalize_utility, risk_diagonal

logger = logging.getLogger(__name__)

#: Epoch cap used by the cap-defined methods when none is given.
DEFAULT_MAX_EPOCHS = 4.0
#: Risk weight used by UtiliMax / weakest-link when none is given (the paper's value is unknown).
DEFAULT_LAM = 1.0


@dataclass(frozen=True)
class _Request:
    names: tuple[str, ...]
    n_tokens: np.ndarray
    budget: float
    max_epochs: np.ndarray  # per source, inf = uncapped
    weight_caps: np.ndarray  # max_epochs * n_tokens / budget

    @property
    def capped(self) -> bool:
        return bool(np.any(np.isfinite(self.max_epochs)))


@dataclass(frozen=True)
class _Outcome:
    weights: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    free_binding: str = NONE  # the binding of a source that is neither capped nor zero
    solver: str = "closed_form"
    status: str = "optimal"
    objective: float | None = None
    utility: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """A mixing method: its name, accepted parameters and runner."""

    name: str
    params: frozenset[str]
    run: Callable[[_Request, dict[str, Any]], _Outcome]
    capped_by_definition: bool = False


def _check_fixed(req: _Request, weights: np.ndarray, method: str, hint: str) -> None:
    if req.capped:
        capping.check_fixed_weights_fit(req.names, weights, req.n_tokens, req.max_epochs,
                                        req.budget, method, hint)


def _run_proportional(req: _Request, params: dict[str, Any]) -> _Outcome:
    weights = proportional_weights(req.n_tokens)
    _check_fixed(req, weights, "proportional",
                 "use method='unimax' or 'temperature', which move weight off capped sources")
    return _Outcome(weights=weights)


def _run_uniform(req: _Request, params: dict[str, Any]) -> _Outcome:
    weights = uniform_weights(len(req.names))
    _check_fixed(req, weights, "uniform", "use method='unimax' (uniform under epoch caps)")
    return _Outcome(weights=weights)


def _run_manual(req: _Request, params: dict[str, Any]) -> _Outcome:
    if "weights" not in params:
        raise ConfigError("method 'manual' needs weights={source: weight, ...} covering every source")
    weights = manual_weights(req.names, params["weights"])
    _check_fixed(req, weights, "manual", "lower the weights of those sources")
    return _Outcome(weights=weights, params={"weights": dict(zip(req.names, map(float, weights)))})


def _positive_number(value: Any, name: str, method: str) -> float:
    if not is_number(value) or not math.isfinite(float(value)) or value <= 0:
        raise ConfigError(f"{method}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def _run_temperature(req: _Request, params: dict[str, Any]) -> _Outcome:
    if "tau" not in params:
        raise ConfigError("method 'temperature' needs tau (1 = proportional, larger = flatter; "
                          "mT5 used tau = 3.33)")
    tau = _positive_number(params["tau"], "tau", "temperature")
    if req.capped:
        capping.check_total_capacity(req.names, req.n_tokens, req.max_epochs, req.budget)
    weights = temperature_weights(req.n_tokens, tau, req.weight_caps if req.capped else None)
    return _Outcome(weights=weights, params={"tau": tau})


def _run_unimax(req: _Request, params: dict[str, Any]) -> _Outcome:
    capping.check_total_capacity(req.names, req.n_tokens, req.max_epochs, req.budget)
    weights = unimax_weights(req.n_tokens, req.budget, req.max_epochs)
    return _Outcome(weights=weights, free_binding=BUDGET_SHARE)


def _utility_settings(req: _Request, params: dict[str, Any], method: str):
    """Shared parameter handling of the utility-based methods: defaults logged, values checked, and
    every value used (defaults included, named in ``defaulted``) returned for mixture.json, with the
    per-source diagonal of Sigma in the normalised units (``risk_diagonal``)."""
    from mixweave.mixers.convex import default_solver

    if params.get("utility") is None:
        raise ConfigError(f"method {method!r} needs a utility table (source x benchmark scores); "
                          "run the utility stage or pass utility=...")
    table = coerce_utility(params["utility"], params.get("utility_std")).aligned(req.names)
    defaulted = []
    lam = params.get("lam")
    if lam is None:
        lam = DEFAULT_LAM
        defaulted.append("lam")
        logger.info("%s: lam not set, using %g (the paper's value is unknown; lam='n' uses the "
                    "number of sources, as DataMixer does)", method, lam)
    elif lam == "n":
        lam = float(len(req.names))
    elif not (is_number(lam) and math.isfinite(lam) and lam >= 0):
        raise ConfigError(f"{method}: lam must be a finite number >= 0 or 'n', got {lam!r}")
    risk = params.get("risk")
    if risk is None:
        risk = "se" if table.se is not None else "diagonal" if table.std is not None else "identity"
        defaulted.append("risk")
        logger.info("%s: risk not set, using Sigma=%s%s", method, risk, "" if risk == "se" else
                    " (the table has no standard errors of its means)")
    normalize = params.get("normalize")
    if normalize is None:
        normalize = "minmax"
        defaulted.append("normalize")
        logger.info("%s: normalize not set, using per-benchmark min-max (best source = 1)", method)
    solver = params.get("solver") or default_solver()
    utility, scale = normalize_utility(table.scores, normalize)
    diag = risk_diagonal(table, scale, risk)
    settings = {"lam": float(lam), "risk": risk, "normalize": normalize,
                "benchmarks": list(table.benchmarks), "defaulted": defaulted,
                "risk_diagonal": {n: float(d) for n, d in zip(req.names, diag)}}
    settings.update(_skill_settings(table.benchmarks, params))
    return table, utility, diag, solver, settings


def _skill_settings(benchmarks: tuple[str, ...], params: dict[str, Any]) -> dict[str, Any]:
    """Each benchmark's skill (``benchmark_skills`` over the records' and the default tags) and,
    with ``target_skills``, the normalised target and each column's weight a_j (recorded in
    mixture.json; the report compares the target with the benchmarks' own composition)."""
    from mixweave.data.benchmarks import benchmark_skills
    from mixweave.mixers.utility_math import normalized_target, skill_column_weights

    tags = params.get("benchmark_skills")
    if tags is not None and not isinstance(tags, Mapping):
        raise ConfigError(f"benchmark_skills must be a mapping {{benchmark: skill}}, got {tags!r}")
    skills = benchmark_skills(benchmarks, tags)
    out: dict[str, Any] = {"benchmark_skills": skills}
    target = params.get("target_skills")
    if target is not None:
        weights = skill_column_weights(benchmarks, skills, target)
        out["target_skills"] = normalized_target(target)
        out["skill_weights"] = {b: float(a) for b, a in zip(benchmarks, weights)}
    return out


def _run_utilimax(req: _Request, params: dict[str, Any]) -> _Outcome:
    from mixweave.mixers.utilimax import utilimax_objective, utilimax_weights

    capping.check_total_capacity(req.names, req.n_tokens, req.max_epochs, req.budget)
    table, utility, diag, solver, settings = _utility_settings(req, params, "utilimax")
    squared = params.get("squared")
    if squared is None:
        squared = False
        settings["defaulted"].append("squared")
        logger.info("utilimax: squared not set, using the unsquared L2 gap (an SOCP)")
    if not isinstance(squared, bool):
        raise ConfigError(f"utilimax: squared must be true or false, got {squared!r}")
    a = None if "skill_weights" not in settings else np.array(list(settings["skill_weights"].values()))
    result = utilimax_weights(utility, req.weight_caps, diag, settings["lam"], squared, solver, column_weights=a)
    objective = utilimax_objective(result.weights, utility, diag, settings["lam"], squared, column_weights=a)
    return _Outcome(weights=result.weights, params={**settings, "squared": squared},
                    solver=result.solver, status=result.status, objective=objective,
                    utility=table.as_dict())


def _run_weakest_link(req: _Request, params: dict[str, Any]) -> _Outcome:
    from mixweave.mixers.weakest_link import weakest_link_objective, weakest_link_weights

    capping.check_total_capacity(req.names, req.n_tokens, req.max_epochs, req.budget)
    table, utility, diag, solver, settings = _utility_settings(req, params, "weakest_link")
    groups = None
    if "target_skills" in settings:
        from mixweave.mixers.utility_math import skill_groups

        groups = skill_groups(table.benchmarks, settings["benchmark_skills"], settings["target_skills"])
    result = weakest_link_weights(utility, req.weight_caps, diag, settings["lam"], solver, groups=groups)
    objective = weakest_link_objective(result.weights, utility, diag, settings["lam"], groups=groups)
    return _Outcome(weights=result.weights, params=settings, solver=result.solver,
                    status=result.status, objective=objective, utility=table.as_dict())


def _run_learned(req: _Request, params: dict[str, Any], method: str) -> _Outcome:
    """DoReMi / RegMix: the weights the proxies learned (``learned_weights``, from
    :mod:`mixweave.mixers.learned`) made feasible under the epoch caps by capped water-filling."""
    from mixweave.mixers.learned import feasible_under_caps

    learned = params.get("learned_weights")
    if learned is None:
        raise ConfigError(f"method {method!r} learns its weights from proxy models trained on packed windows: "
                          "run it through the mix stage (a run config with an order section) or pass "
                          "learned_weights from mixweave.mixers.learned.learned_weights(...)")
    weights = manual_weights(req.names, learned)
    if req.capped:
        capping.check_total_capacity(req.names, req.n_tokens, req.max_epochs, req.budget)
        weights = feasible_under_caps(weights, req.weight_caps)
    settings = {k: v for k, v in params.items() if k != "learned_weights"}
    return _Outcome(weights=weights, params=settings)


def _run_doremi(req: _Request, params: dict[str, Any]) -> _Outcome:
    return _run_learned(req, params, "doremi")


def _run_regmix(req: _Request, params: dict[str, Any]) -> _Outcome:
    return _run_learned(req, params, "regmix")


def _learned_params(method: str) -> frozenset[str]:
    import dataclasses

    from mixweave.mixers.params import METHOD_PARAMS

    return frozenset(f.name for f in dataclasses.fields(METHOD_PARAMS[method])) | {"learned_weights"}


_UTILITY_PARAMS = frozenset({"utility", "utility_std", "lam", "risk", "normalize", "solver", "target_skills",
                             "benchmark_skills"})

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("proportional", frozenset(), _run_proportional),
        MethodSpec("temperature", frozenset({"tau"}), _run_temperature),
        MethodSpec("uniform", frozenset(), _run_uniform),
        MethodSpec("manual", frozenset({"weights"}), _run_manual),
        MethodSpec("unimax", frozenset(), _run_unimax, capped_by_definition=True),
        MethodSpec("utilimax", _UTILITY_PARAMS | {"squared"}, _run_utilimax, capped_by_definition=True),
        MethodSpec("weakest_link", _UTILITY_PARAMS, _run_weakest_link, capped_by_definition=True),
        MethodSpec("doremi", _learned_params("doremi"), _run_doremi, capped_by_definition=True),
        MethodSpec("regmix", _learned_params("regmix"), _run_regmix, capped_by_definition=True),
    )
}


def method_spec(method: str) -> MethodSpec:
    """The spec for ``method`` (case-insensitive; '-' and '_' are the same)."""
    key = method.strip().lower().replace("-", "_") if isinstance(method, str) else None
    if key not in METHODS:
        raise ConfigError(f"unknown mixing method {method!r}; use one of {', '.join(METHODS)}")
    return METHODS[key]


def _max_epochs_param(names: tuple[str, ...], caps: np.ndarray) -> Any:
    if np.all(caps == caps[0]):
        return None if math.isinf(caps[0]) else float(caps[0])
    return caps_as_dict(names, caps)


def solve_with_caps(sources: Mapping[str, Any], budget_tokens: float, method: str,
                    max_epochs: np.ndarray | float | Mapping[str, float] | None,
                    params: Mapping[str, Any]) -> Mixture:
    """:func:`solve` with ``max_epochs`` also accepted as an array of per-source caps >= 0 (inf =
    uncapped) in source order, as multi-phase solving needs (a used-up source has cap 0)."""
    names, n_tokens, n_docs, paths = source_columns(sources)
    budget = check_budget(budget_tokens)
    spec = method_spec(method)
    unknown = sorted(set(params) - spec.params)
    if unknown:
        accepted = ", ".join(sorted(spec.params | {"max_epochs"}))
        raise ConfigError(f"method {spec.name!r} does not take {', '.join(unknown)}; "
                          f"it accepts {accepted}")
    if isinstance(max_epochs, np.ndarray):
        caps = np.asarray(max_epochs, dtype=float)
        if caps.shape != (len(names),) or np.any(np.isnan(caps)) or np.any(caps < 0):
            raise ConfigError("per-source max_epochs must be one value >= 0 per source")
    else:
        if max_epochs is None and spec.capped_by_definition:
            max_epochs = DEFAULT_MAX_EPOCHS
            logger.info("%s: max_epochs not set, using %g", spec.name, max_epochs)
        caps = resolve_max_epochs(max_epochs, names)
    req = _Request(names, n_tokens, budget, caps, capping.weight_caps(n_tokens, caps, budget))
    outcome = spec.run(req, dict(params))
    weights = outcome.weights
    target = weights * budget
    index: list = [None]  # one name -> position index, built on first lookup, for every column

    def column(values: Any) -> SourceColumn:
        return SourceColumn(names, values, index)

    return Mixture(
        method=spec.name,
        params={"max_epochs": _max_epochs_param(names, caps), **outcome.params},
        budget_tokens=budget,
        n_tokens=column(n_tokens),
        weights=column(weights),
        target_tokens=column(target),
        epochs=column(target / n_tokens),
        max_epochs=column(caps if np.all(np.isfinite(caps)) else caps_as_list(caps)),
        binding=column(binding_array(weights, req.weight_caps, outcome.free_binding)),
        solver=outcome.solver,
        status=outcome.status,
        objective=outcome.objective,
        n_docs=column(n_docs),
        paths=column(paths),
        utility=outcome.utility,
    )


def solve(sources: Mapping[str, Any], budget_tokens: float, method: str, *,
          max_epochs: float | Mapping[str, float] | None = None, **params: Any) -> Mixture:
    """Mixture weights for ``sources`` under a token budget.

    ``sources``: name -> token count, or name -> mapping/object with ``n_tokens`` (optionally
    ``n_docs``, ``paths``). ``method``: proportional, temperature (tau), uniform, manual
    (weights), unimax, utilimax (utility, utility_std, lam, squared, risk, normalize, solver) or
    weakest_link / weakest-link (same, without squared). Raises InputError for bad sources,
    ConfigError for bad parameters and InfeasibleError when the caps cannot absorb the budget.
    """
    return solve_with_caps(sources, budget_tokens, method, max_epochs, params)


def sources_from_stats(stats: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``sources`` mapping of an ingest stats.json dict (n_tokens, n_docs, paths per source)."""
    if not isinstance(stats, Mapping):
        raise InputError(f"stats must be the stats.json object, got {type(stats).__name__}")
    if stats.get("schema_version") != 1:
        raise InputError(f"stats.json schema_version is {stats.get('schema_version')!r}, expected 1; "
                         "re-run the count stage with this version of mixweave")
    sources = stats.get("sources")
    if not isinstance(sources, Mapping) or not sources:
        raise InputError("stats.json has no 'sources' object; re-run the count stage")
    out = {}
    for name, entry in sources.items():
        if not isinstance(entry, Mapping) or "n_tokens" not in entry:
            raise InputError(f"stats.json: sources.{name} has no n_tokens; re-run the count stage")
        out[name] = {"n_tokens": entry["n_tokens"], "n_docs": entry.get("n_docs"),
                     "paths": entry.get("paths") or ()}
    return out


def mix_from_stats(stats: Mapping[str, Any], *, method: str, budget_tokens: float,
                   max_epochs: float | Mapping[str, float] | None, utility: Any = None,
                   utility_std: Any = None, **params: Any) -> Mixture:
    """Solve a mixture for the sources of an ingest ``stats.json`` dict (what the CLI calls).

    ``utility``/``utility_std`` are passed on to the utility-based methods and ignored (with a
    log line) by the others.
    """
    spec = method_spec(method)
    if "utility" in spec.params:
        params = {**params, "utility": utility, "utility_std": utility_std}
    elif utility is not None:
        logger.info("%s does not use utility; the utility table is ignored", spec.name)
    return solve(sources_from_stats(stats), budget_tokens, spec.name, max_epochs=max_epochs, **params)
