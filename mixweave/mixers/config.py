"""The ``mix`` section of a run config: method, budget, epoch caps and the method's typed parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..data.typed import from_dict, to_plain
from ..errors import ConfigError
from .bts import BtsConfig
from .long_context import parse_phases
from .params import coerce_method_params


@dataclass(frozen=True, kw_only=True)
class MixConfig:
    method: str = "unimax"
    """proportional | temperature | uniform | manual | unimax | utilimax | weakest-link | doremi | regmix
    (the last two train proxy models on the pack: they need an order section)"""
    budget_tokens: float = 0.0
    """Training budget in tokens; 0 = the total tokens of all sources (one epoch of everything)."""
    unit: Literal["tokens", "bytes"] = "tokens"
    """The unit the mixture is solved in: tokens, or bytes (Byte Latent Transformer: sizes = tokens x
    the source's bytes per token, budget from budget_bytes). mixture.json carries both either way."""
    budget_bytes: float = 0.0
    """Training budget in UTF-8 bytes, with unit: bytes (0 = one pass over every source's bytes). A
    separate key, not one `budget` read in `unit`, so a number never changes meaning with another key."""
    max_epochs: float = 4.0
    params: Any = None
    """The method's parameters, typed by method (:data:`mixweave.mixers.params.METHOD_PARAMS`):
    written as a mapping, e.g. {tau: 3.33} or {weights: {web: 0.5, code: 0.5}} or {lam: 0.1}."""
    utility: str | None = None
    """Utility table (parquet/csv, source x benchmark) for utilimax / weakest-link."""
    bts: BtsConfig | None = None
    """Branch-train-stitch (mixers/bts.py): {experts: {expert: [sources]}, domain_share,
    expert_budget_tokens, stitch_budget_tokens, stitch: equal | seed}; null = none."""
    phases: Any = None
    """Sequence-length phases (mixers/long_context.py): a list of {name, share, seq_len (null =
    order.seq_len), long_docs: {min_tokens, upsample} | null}; shares sum to 1; null/[] = none."""

    def __post_init__(self) -> None:
        _, params = coerce_method_params(self.method, self.params, "mix.params")
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "phases", parse_phases(self.phases))
        if isinstance(self.bts, Mapping):
            object.__setattr__(self, "bts", from_dict(BtsConfig, self.bts, "mix.bts"))
        if self.bts is not None and getattr(self, "phases", None):
            raise ConfigError("mix.bts and mix.phases cannot be combined: branch-train-stitch variants are mixtures "
                              "over the main pack; configure one of them")
        if self.max_epochs <= 0:
            raise ConfigError(f"mix.max_epochs must be > 0, got {self.max_epochs}")
        if self.unit not in ("tokens", "bytes"):
            raise ConfigError(f"mix.unit {self.unit!r}: use tokens or bytes")
        if self.unit == "tokens" and self.budget_bytes:
            raise ConfigError("mix.budget_bytes is for mix.unit: bytes; set unit: bytes or give budget_tokens")
        if self.unit == "bytes" and self.budget_tokens:
            raise ConfigError("mix.unit: bytes takes its budget from mix.budget_bytes, not budget_tokens")
        if not (self.budget_bytes == 0 or self.budget_bytes >= 1):
            raise ConfigError(f"mix.budget_bytes must be 0 (one pass over every source) or at least 1 byte, got "
                              f"{self.budget_bytes:g}")
        if not (self.budget_tokens == 0 or self.budget_tokens >= 1):
            raise ConfigError(f"mix.budget_tokens must be 0 (one pass over every source) or at least 1 token, got "
                              f"{self.budget_tokens:g}")

    def solver_params(self) -> dict[str, Any]:
        """The parameters the solver takes: set values only (unset ones get logged defaults there)."""
        return {k: v for k, v in to_plain(self.params).items() if v is not None}
