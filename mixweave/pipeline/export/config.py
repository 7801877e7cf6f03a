"""The ``export`` section of a run config: which trainer formats, and their options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...errors import ConfigError

FORMAT_NAMES = ("megatron", "olmo", "mds", "hf", "datatrove", "all")


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    formats: tuple[str, ...] = ("megatron", "mds")
    """megatron | olmo | mds | hf | datatrove (or all)."""
    mds_weighting: Literal["choose", "proportion"] = "choose"
    """MDS streams: absolute samples per source (choose) or proportion + epoch_size."""
    hf_materialize: bool = True
    global_batch_size: int | None = None
    """Sequences per optimizer step in the target trainer (OLMo-core rounds a source mixture to whole
    batches); the exported counts are chosen so that the trainer realises them exactly. None = 1."""
    batching: Literal["shuffle", "similarity"] = "shuffle"
    """hf and mds: 'similarity' (Lory) writes one dataset whose rows, read in order, fill each global
    batch (global_batch_size) with consecutive windows of one source's ICP stream, each source drawn
    exactly its planned windows; the manifest reports the batch coherence next to the shuffle's."""

    def __post_init__(self) -> None:
        bad = [f for f in self.formats if f.lower() not in FORMAT_NAMES]
        if bad:
            raise ConfigError(f"export.formats: unknown format {bad[0]!r}; use {', '.join(FORMAT_NAMES)}")
        if self.batching not in ("shuffle", "similarity"):
            raise ConfigError(f"export.batching must be shuffle or similarity, got {self.batching!r}")
        if self.batching == "similarity" and self.global_batch_size is None:
            raise ConfigError("export.batching: similarity needs export.global_batch_size (sequences per step)")
        if self.global_batch_size is not None and self.global_batch_size < 1:
            raise ConfigError(f"export.global_batch_size must be >= 1 sequences, got {self.global_batch_size}")
