"""The ``study`` section of a run config: candidate mixtures x order modes x seeds of proxy runs.

Imports nothing heavy (configs are validated without torch). Cross-section checks (an ``order``
section, a utility table for utility-based candidates) are in :func:`check_study`, called by
:func:`mixweave.pipeline.config.parse_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..data.manifest import check_name
from ..data.typed import to_plain
from ..errors import ConfigError
from ..mixers.params import coerce_method_params, method_key
from ..trainer.config import TrainConfig

#: methods that need a utility table (the utility stage or mix.utility)
UTILITY_METHODS = ("utilimax", "weakest_link")


@dataclass(frozen=True, kw_only=True)
class StudyCandidate:
    name: str
    """Label in tables and charts (also a folder name)."""
    method: str
    """Any mix.method (proportional, temperature, uniform, manual, unimax, utilimax, weakest-link, ...)."""
    params: Any = None
    """The method's parameters, typed like mix.params (e.g. {tau: 3.33}, {lam: 0.1})."""

    def __post_init__(self) -> None:
        check_name(self.name, "study candidate name", ConfigError)
        _, params = coerce_method_params(self.method, self.params, f"study.candidates.{self.name}.params",
                                         unknown=f"study.candidates: {self.name} has unknown method {self.method!r};")
        object.__setattr__(self, "params", params)

    def solver_params(self) -> dict[str, Any]:
        return {k: v for k, v in to_plain(self.params).items() if v is not None}


def _default_proxy() -> TrainConfig:
    return TrainConfig(depth=1, batch_size=8, holdout_windows=0, log_interval=50)


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    candidates: tuple[StudyCandidate, ...]
    orders: tuple[Literal["icp", "random"], ...] = ("icp", "random")
    seeds: int = 3
    """Proxy runs per candidate x order; seed s = model init s and data order s for every candidate."""
    baseline: str | None = None
    """Candidate the others are compared with (default: the unimax candidate)."""
    budget_tokens: float | None = None
    """Training tokens per proxy run (default mix.budget_tokens; 0 = one pass over the study pack)."""
    max_epochs: float | None = None
    """Epoch cap per source (default mix.max_epochs, else 4)."""
    proxy: TrainConfig = field(default_factory=_default_proxy)
    """The proxy model and optimiser (train section keys: depth, batch_size, steps, lr, ...); seed,
    data_seed, holdout_windows and benchmarks are set by the study."""
    holdout_docs: int = 16
    """Kept documents per source held out of every candidate's training (at most a fifth of a source)."""
    eval_examples: int = 50
    """Benchmark examples scored per benchmark."""
    eval_windows: int = 8
    """Held-out windows per source scored for the held-out loss."""
    n_boot: int = 2000
    alpha: float = 0.05

    def __post_init__(self) -> None:
        names = [c.name for c in self.candidates]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"study.candidates: the name {dup[0]} is used twice; give each candidate its own name")
        if len(set(self.orders)) != len(self.orders):
            raise ConfigError(f"study.orders lists a mode twice ({', '.join(self.orders)}); list icp and/or random once")
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError(f"study.seeds must be an integer >= 1, got {self.seeds!r} (3 or more for intervals)")
        if self.baseline is None:
            unimax = [c.name for c in self.candidates if method_key(c.method) == "unimax"]
            if not unimax:
                raise ConfigError("study.baseline is unset and no candidate uses method unimax; add a unimax candidate "
                                  "or name the baseline")
            object.__setattr__(self, "baseline", unimax[0])
        elif self.baseline not in names:
            raise ConfigError(f"study.baseline {self.baseline!r} is not among the candidates ({', '.join(names)}); "
                              "name one of them")
        if self.budget_tokens is not None and not (self.budget_tokens == 0 or self.budget_tokens >= 1):
            raise ConfigError(f"study.budget_tokens must be 0 (one pass) or at least 1 token, got {self.budget_tokens:g}")
        if self.max_epochs is not None and self.max_epochs <= 0:
            raise ConfigError(f"study.max_epochs must be > 0, got {self.max_epochs}")
        if min(self.holdout_docs, self.eval_examples, self.eval_windows, self.n_boot) < 1:
            raise ConfigError("study: holdout_docs, eval_examples, eval_windows and n_boot must be >= 1")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"study.alpha must be in (0, 1), got {self.alpha}")

    def candidate(self, name: str) -> StudyCandidate:
        return next(c for c in self.candidates if c.name == name)


def check_study(config) -> None:
    """Checks of the study section that need other sections of the run config."""
    s = config.study
    if s is None:
        return
    if config.order is None:
        raise ConfigError("study needs an order section: its packs are cut from the ICP order at order.seq_len")
    needs = [c.name for c in s.candidates if method_key(c.method) in UTILITY_METHODS]
    if needs and config.utility is None and not (config.mix and config.mix.utility):
        raise ConfigError(f"study candidates {', '.join(needs)} need a utility table: add a utility section or "
                          "mix.utility")
