"""Typed parameters of each mixing method, so a run config is validated whole at load time.

``mix.params`` in a run config is checked against the dataclass of its ``mix.method``: an unknown
key (``{tua: 0.7}``) or a value of the wrong type fails before any stage runs, with the dotted key
and the accepted keys. The solvers in :mod:`mixweave.mixers.api` still receive plain mappings (the
CLI's ``--param`` and the library API pass the same keys), and they keep their own range checks.
The utility table itself is not a parameter here: a run config names it with ``mix.utility`` or
gets it from the utility stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mixweave.data.typed import from_dict
from mixweave.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class NoParams:
    """proportional, uniform, unimax: nothing to set (the budget and epoch caps are mix keys)."""


@dataclass(frozen=True, kw_only=True)
class TemperatureParams:
    tau: float
    """Temperature: 1 = proportional, larger = flatter (mT5 used 3.33)."""


@dataclass(frozen=True, kw_only=True)
class ManualParams:
    weights: dict[str, float]
    """{source: weight}; normalised to sum 1."""


@dataclass(frozen=True, kw_only=True)
class UtilityParams:
    """Shared by UtiliMax and weakest-link; unset values are chosen and logged by the solver."""

    lam: float | Literal["n"] | None = None
    """Risk weight (>= 0), or 'n' for the number of sources."""
    risk: Literal["identity", "diagonal", "se"] | None = None
    """Sigma: diag of normalised SE^2 (se, the default when the table has standard errors), of
    normalised per-document variance (diagonal), or I (identity)."""
    normalize: Literal["minmax", "max", "none"] | None = None
    solver: str | None = None
    """A cvxpy solver name (default CLARABEL when installed)."""
    target_skills: dict[str, float] | None = None
    """Target skill composition {skill: share} (knowledge, reasoning, code, math, multilingual;
    normalised to sum 1): each skill counts by its share instead of by its number of benchmarks
    (Compute-Optimal Scaling of Skills); unset = every benchmark counts once."""

    def __post_init__(self) -> None:
        if self.target_skills is not None:
            from mixweave.mixers.utility_math import normalized_target

            normalized_target(self.target_skills)


@dataclass(frozen=True, kw_only=True)
class UtiliMaxParams(UtilityParams):
    squared: bool | None = None
    """Squared L2 gap (a QP) instead of the unsquared one (an SOCP)."""


@dataclass(frozen=True, kw_only=True)
class ProxyParams:
    """The proxy models of the learned methods (DoReMi, RegMix): the built-in trainer's GPT on the
    pack's windows (its seq_len). Cost grows with depth^2 x steps x batch_size."""

    depth: int = 1
    """GPT depth (d_model 64 x depth); 1 ~ 0.1M non-embedding parameters."""
    steps: int = 100
    batch_size: int = 8
    """Windows per step."""
    lr: float = 3e-3
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("depth", "steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"mix.params.{name} must be an integer >= 1, got {value!r}")
        if not self.lr > 0:
            raise ConfigError(f"mix.params.lr must be > 0, got {self.lr!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"mix.params.seed must be an integer >= 0, got {self.seed!r}")


@dataclass(frozen=True, kw_only=True)
class DoReMiParams(ProxyParams):
    eta: float = 1.0
    """Exponentiated-gradient step size (official default 1.0)."""
    smoothing: float = 1e-3
    """c in (1 - c) a + c / k (official run scripts: 1e-3)."""
    reference: Literal["natural", "uniform"] = "natural"
    """Reference model's mixture: token shares (the DoReMi README) or uniform."""
    reference_steps: int | None = None
    """Reference run steps (default: steps)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.eta > 0:
            raise ConfigError(f"mix.params.eta must be > 0, got {self.eta!r}")
        if not 0 <= self.smoothing < 1:
            raise ConfigError(f"mix.params.smoothing must be in [0, 1), got {self.smoothing!r}")
        if self.reference_steps is not None and (not isinstance(self.reference_steps, int) or self.reference_steps < 1):
            raise ConfigError(f"mix.params.reference_steps must be an integer >= 1, got {self.reference_steps!r}")


@dataclass(frozen=True, kw_only=True)
class RegMixParams(ProxyParams):
    n_proxies: int = 16
    """Proxy runs, one per sampled mixture (the paper: 512 for 17 domains)."""
    regressor: Literal["linear", "quadratic", "gbm"] = "gbm"
    """Gradient boosting (HistGradientBoosting, the paper's LightGBM stand-in; it does not extrapolate
    to the simplex's corners), ridge on the weights, or ridge on degree-2 features. A linear fit
    predicts its minimum at a vertex, so its top-k average is near one-hot."""
    target: str = "auto"
    """auto (benchmarks when the run has them, else heldout) | benchmarks (mean answer loss) | heldout
    (mean held-out loss over sources) | benchmark:<name> | heldout:<source>."""
    holdout_windows: int = 16
    """Held-out windows per source (at most 10% of it), never trained on."""
    n_simulate: int = 100_000
    top_k: int = 128
    prior_temperature: float = 0.5
    max_usage: float = 15.0
    """Reject sampled mixtures with a weight above max_usage x the token share."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("n_proxies", "n_simulate", "top_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "n_proxies" else 1):
                raise ConfigError(f"mix.params.{name} must be an integer >= {2 if name == 'n_proxies' else 1}, "
                                  f"got {value!r}")
        if isinstance(self.holdout_windows, bool) or not isinstance(self.holdout_windows, int) \
                or self.holdout_windows < 0:
            raise ConfigError(f"mix.params.holdout_windows must be an integer >= 0, got {self.holdout_windows!r}")
        kind, _, name = self.target.partition(":")
        if not (self.target in ("auto", "benchmarks", "heldout") or (kind in ("benchmark", "heldout") and name)):
            raise ConfigError(f"mix.params.target {self.target!r}: use auto, benchmarks, heldout, "
                              "benchmark:<name> or heldout:<source>")
        if not 0 < self.prior_temperature <= 1 or not self.max_usage > 1:
            raise ConfigError("mix.params: need 0 < prior_temperature <= 1 and max_usage > 1")


METHOD_PARAMS: dict[str, type] = {
    "proportional": NoParams,
    "temperature": TemperatureParams,
    "uniform": NoParams,
    "manual": ManualParams,
    "unimax": NoParams,
    "utilimax": UtiliMaxParams,
    "weakest_link": UtilityParams,
    "doremi": DoReMiParams,
    "regmix": RegMixParams,
}


def method_key(method: str) -> str:
    """Canonical method name: case-insensitive, '-' and '_' the same."""
    return str(method).strip().lower().replace("-", "_")


def coerce_method_params(method: str, params: Any, where: str, *, unknown: str | None = None) -> tuple[str, Any]:
    """``(method key, typed params)`` for a method name and its parameters as written (None, a
    mapping, or already the method's dataclass): what ``mix`` and each study candidate check.

    ``where`` is the dotted key of the parameters (``mix.params``); ``unknown`` the message start
    for an unknown method (default ``"<where's section>.method <name>:"``)."""
    key = method_key(method)
    if key not in METHOD_PARAMS:
        head = unknown or f"{where.rpartition('.')[0] or where}.method {method!r}:"
        raise ConfigError(f"{head} use one of {', '.join(k.replace('_', '-') for k in METHOD_PARAMS)}")
    cls = METHOD_PARAMS[key]
    if params is None or isinstance(params, Mapping):
        return key, from_dict(cls, params or {}, where)
    if not isinstance(params, cls):
        raise ConfigError(f"{where}: expected the parameters of {method}, got {type(params).__name__}")
    return key, params
