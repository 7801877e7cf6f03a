"""The one utility config: the ``utility`` section of a run config and the settings of
:func:`mixweave.utility.api.run_estimate` / ``mixweave utility``.

Fields marked [embedding] or [medu] are read by that method only; ``normalize`` and ``batch_size``
left unset take the method's default (:meth:`UtilityConfig.resolved`). From YAML every value is
typed and checked at load; from Python, ``encoder``, ``backend``, ``cache`` and ``descriptions``
may also be ready objects (an encoder, a Backend, a ResultCache, a {benchmark: text} mapping).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError
from .cost import DEFAULT_ABLATION_PARAMS

METHOD_DEFAULTS = {"embedding": {"normalize": "minmax", "batch_size": 32},
                   "medu": {"normalize": "none", "batch_size": 64},
                   "table": {"normalize": "none", "batch_size": 64}}


@dataclass(frozen=True, kw_only=True)
class UtilityConfig:
    """Source x benchmark utility: embedding similarity (CPU), MEDU (an LLM), or an existing table."""

    method: Literal["embedding", "medu", "table"] = "embedding"
    table: str | None = None
    """[table] an existing utility table (parquet/csv)."""
    # -- sampling and aggregation (embedding, medu)
    per_source: int | dict[str, int] | None = 100
    """Documents sampled per source: N, {source: N}, or null for all (seeded, any partitioning)."""
    seed: int = 0
    """Sampling seed (in a run: the run's seed)."""
    split: str = "auto"
    """Benchmark split: 'auto' = dev/validation records when a benchmark has them, else all."""
    max_examples: int | None = None
    """At most this many examples per benchmark (seeded choice); null = all."""
    n_boot: int = 2000
    alpha: float = 0.05
    normalize: Literal["minmax", "max", "zscore", "none"] | None = None
    """Per-benchmark normalisation of the table; unset: minmax (embedding), none (medu)."""
    batch_size: int | None = None
    """Texts per encoder batch (embedding, default 32) or prompts per backend call (medu, default 64)."""
    ablation_params: float = DEFAULT_ABLATION_PARAMS
    """Model size of the ablation run the cost report compares against."""
    ablation_tokens: float | None = None
    # -- embedding
    encoder: str = "default"
    """[embedding] 'default' (all-MiniLM-L6-v2) or a local sentence-transformers folder."""
    top_k: int = 5
    """[embedding] top-k cosine similarities per document."""
    max_tokens: int = 256
    """[embedding] tokens of each text the encoder reads."""
    encoder_backend: Literal["auto", "torch", "onnx", "openvino"] = "auto"
    """[embedding] the encoder's runtime, lossless only (the table must not depend on the CPU's bf16
    instructions): auto = torch on CUDA, the fp32 OpenVINO export on CPU (no torch import)."""
    device: str | None = None
    # -- medu
    backend: Literal["transformers", "vllm", "openai"] = "transformers"
    model: str | None = None
    """[medu] a local model folder (transformers, vllm) or a served model name (openai)."""
    backend_options: dict[str, Any] = field(default_factory=dict)
    """[medu] options of the backend (e.g. base_url for openai); checked against the backend's own."""
    mode: Literal["generate", "logprob"] = "generate"
    """[medu] generate (free text ending in 'Final Score: <label>') | logprob (one forward pass)."""
    prompt_version: str = "v1"
    max_doc_tokens: int = 2048
    examples_per_chunk: int = 8
    max_chunks: int = 8
    max_example_chars: int = 2000
    describe_max_tokens: int = 512
    rate_max_tokens: int = 512
    temperature: float = 0.1
    cache: str | None = None
    """[medu] sqlite file of ratings so a re-run resumes (in a run: beside the stage folder)."""
    descriptions: str | dict[str, str] | None = None
    """[medu] {benchmark: description}, or a JSON file of it, to skip the describe/merge steps."""
    model_params: float | None = None
    """[medu] parameter count for the FLOPs estimate when the backend cannot know it (openai)."""

    def __post_init__(self) -> None:
        if self.method == "table" and not self.table:
            raise ConfigError("utility.method table needs utility.table: the path of a parquet/csv utility table")
        if self.method == "medu" and not self.model and isinstance(self.backend, str):
            raise ConfigError("utility.method medu needs a model (utility.model): a local model folder or a served model name")
        if isinstance(self.per_source, int) and self.per_source < 1:
            raise ConfigError(f"utility.per_source must be >= 1 (or null for all), got {self.per_source}")
        if self.method == "medu" and isinstance(self.backend, str):
            from .backend import backend_option_names

            accepted = backend_option_names(self.backend)
            unknown = sorted(set(self.backend_options) - set(accepted))
            if unknown:
                raise ConfigError(f"utility.backend_options.{unknown[0]}: not an option of the {self.backend} "
                                  f"backend; use one of {', '.join(sorted(accepted))}")

        if self.method == "medu":
            self.medu_options()  # the MEDU core's own checks (mode, sizes, temperature), at load time

    def medu_options(self):
        """The subset of this config that the MEDU core (:mod:`mixweave.utility.medu`) reads."""
        from .medu import MeduOptions

        resolved = self.resolved()
        return MeduOptions(**{f.name: getattr(resolved, f.name) for f in dataclasses.fields(MeduOptions)})

    def resolved(self) -> UtilityConfig:
        """This config with ``normalize`` and ``batch_size`` set to the method's defaults where unset."""
        unset = {k: v for k, v in METHOD_DEFAULTS[self.method].items() if getattr(self, k) is None}
        return dataclasses.replace(self, **unset) if unset else self


def utility_config(method: str, **settings: Any) -> UtilityConfig:
    """``UtilityConfig(method=..., **settings)`` with an unknown key named, and the accepted ones listed."""
    names = {f.name for f in dataclasses.fields(UtilityConfig)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise ConfigError(f"unknown utility settings {unknown}; valid ones are {', '.join(sorted(names - {'method'}))}")
    return UtilityConfig(method=method, **settings)
