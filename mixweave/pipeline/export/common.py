"""What every exporter shares: the plan, window conversions, token dtypes, paths, YAML.

Window conventions. A pack stores windows of S tokens, or S+1 tokens overlapping the next stream
window by one (``plus_one``). A window always counts S training tokens. Targets want:

* S tokens (Megatron doc, OLMo-core instance, MDS row, HF row): an S+1 window drops its last token
  (the reader supplies that label: Megatron takes the first token of the next shuffled window;
  OLMo/MDS/HF models shift labels inside the row);
* S+1 tokens (datatrove/nanotron): an S+1 window is written as is; an S window borrows the first
  token of the next window *in written order* as its last label -- exactly what Megatron does at
  every sample boundary. Packing with ``plus_one`` gives true labels instead.

Attention sink. When the pack has one (``order.sink_token``), token 0 of every window is
``sink_id`` and the formats carry it as data (each reader reads it back token-exact); ``vocab_size``
counts it, and every export manifest and trainer config file names it (:meth:`ExportContext.sink_note`).
An S window written as S+1 (datatrove) borrows token 1 of the next window (its first stream token)
rather than the sink, so the sink never becomes that label; Megatron's GPTDataset appends the next
sample's first token itself, which is the sink: one label in S is the sink there (mask it in the loss,
or pack with ``plus_one`` and train on Megatron only the S-token rows).

Weights. Every exporter states the plan's window counts T_i (see :mod:`mixweave.trainer.plan`):
relative-weight trainers get ``T_i / sum T``, absolute ones get ``T_i`` samples, repetition caps
get the mixture's ``max_epochs``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixweave.data.windows import FILE_TOKENS, WindowReader, WindowsInfo, read_windows
from mixweave.errors import InputError
from mixweave.trainer.plan import CAP_SLACK, MixturePlan, hamilton

log = logging.getLogger(__name__)


def token_dtype(vocab_size: int, *, signed: bool = False) -> np.dtype:
    """uint16 when every id fits (vocab <= 65536), else uint32 (int32 for readers without uint32)."""
    if vocab_size <= 65536:
        return np.dtype(np.uint16)
    if vocab_size > 2**31 and signed:
        raise InputError(f"vocab_size {vocab_size} does not fit int32")
    return np.dtype(np.int32 if signed else np.uint32)


@dataclass
class ExportContext:
    """Inputs of one export: the plan, the pack, where the output will finally live."""

    pack_dir: Path
    mixture_path: Path
    plan: MixturePlan
    info: WindowsInfo
    final_dir: Path
    path_prefix: str  # how blend/stream files refer to final_dir (default: its absolute path)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def seq_len(self) -> int:
        return self.plan.seq_len

    @property
    def vocab_size(self) -> int:
        return int(self.info.tokenizer["vocab_size"])

    @property
    def eos_id(self) -> int:
        return int(self.info.tokenizer["eos_id"])

    @property
    def names(self) -> tuple[str, ...]:
        return self.plan.names

    @property
    def sink_id(self) -> int | None:
        """The attention-sink token at position 0 of every window (None: the pack has none)."""
        return self.info.sink_id

    def sink_note(self, comment: str = "# ") -> str:
        """One line naming the sink token for a config file's header ('' without one)."""
        if self.sink_id is None:
            return ""
        return (f"{comment}attention sink: token 0 of every sequence is id {self.sink_id} "
                f"({self.info.tokenizer.get('sink_token')}); vocab_size {self.vocab_size} counts it\n")

    def active(self) -> list[str]:
        """Sources the plan draws from (zero-target sources are exported but left out of blends)."""
        return [s.name for s in self.plan.sources if s.target_windows > 0]

    def ref(self, rel: str) -> str:
        """``rel`` (a path inside the export folder) as the trainer config should name it."""
        return f"{self.path_prefix.rstrip('/')}/{rel}" if self.path_prefix else rel

    def windows(self, name: str) -> np.ndarray:
        return read_windows(self.pack_dir, name)

    # bounded memory: exporters walk a source in blocks of windows, one pack file decoded at a time
    _readers: dict = field(default_factory=dict, repr=False)

    def reader(self, name: str) -> WindowReader:
        if name not in self._readers:
            self._readers.clear()  # one source at a time
            self._readers[name] = WindowReader(self.pack_dir, name, self.info)
        return self._readers[name]

    def n_windows(self, name: str) -> int:
        return self.reader(name).n_windows

    @property
    def block_windows(self) -> int:
        """Windows per block when an exporter streams a source (~:data:`FILE_TOKENS` tokens)."""
        return max(1, FILE_TOKENS // (self.seq_len + 1))

    def windows_s_range(self, name: str, dtype: np.dtype, lo: int, hi: int) -> np.ndarray:
        """Windows ``[lo, hi)`` as :meth:`windows_s` would give them."""
        return np.ascontiguousarray(self.reader(name).read(lo, hi)[:, : self.seq_len], dtype=dtype)

    def windows_s_take(self, name: str, dtype: np.dtype, rows: np.ndarray) -> np.ndarray:
        """Windows at ``rows`` (any order) as :meth:`windows_s` would give them."""
        return np.ascontiguousarray(self.reader(name).take(rows)[:, : self.seq_len], dtype=dtype)

    def windows_s_plus_one_range(self, name: str, dtype: np.dtype, lo: int, hi: int) -> np.ndarray:
        """Windows ``[lo, hi)`` as :meth:`windows_s_plus_one` would give them (the last window
        borrows the first token of window 0)."""
        r = self.reader(name)
        if self.plan.plus_one:
            return np.ascontiguousarray(r.read(lo, hi), dtype=dtype)
        hi = min(int(hi), r.n_windows)
        w = r.read(lo, hi + 1)
        out = np.empty((max(0, hi - lo), self.seq_len + 1), dtype=dtype)
        out[:, : self.seq_len] = w[: out.shape[0]]
        c = self.borrow_column
        if out.shape[0]:
            out[:-1, self.seq_len] = w[1: out.shape[0], c]
            out[-1, self.seq_len] = w[out.shape[0], c] if w.shape[0] > out.shape[0] else r.read(0, 1)[0, c]
        return out

    @property
    def borrow_column(self) -> int:
        """Which token of the next window an S window borrows as its last label: the first, or the
        first stream token (1) when token 0 is the attention sink."""
        return 0 if self.sink_id is None else 1

    def windows_s(self, name: str, dtype: np.dtype) -> np.ndarray:
        """``[W, S]`` windows in ``dtype`` (S+1 windows lose their last token)."""
        w = self.windows(name)
        return np.ascontiguousarray(w[:, : self.seq_len], dtype=dtype)

    def windows_s_plus_one(self, name: str, dtype: np.dtype) -> np.ndarray:
        """``[W, S+1]`` windows in ``dtype`` (S windows borrow the next window's first token)."""
        w = self.windows(name)
        if self.plan.plus_one:
            return np.ascontiguousarray(w, dtype=dtype)
        out = np.empty((w.shape[0], self.seq_len + 1), dtype=dtype)
        out[:, : self.seq_len] = w
        if w.shape[0]:
            out[:, self.seq_len] = np.roll(w[:, self.borrow_column], -1)
        return out

    def window_convention(self, target: str) -> str:
        pack = f"S+1={self.seq_len + 1} (overlapping)" if self.plan.plus_one else f"S={self.seq_len}"
        if target == "S":
            dropped = " (last token dropped)" if self.plan.plus_one else ""
            return f"pack windows of {pack} -> rows of S={self.seq_len}{dropped}"
        return f"pack windows of {pack} -> rows of S+1={self.seq_len + 1}" + (
            "" if self.plan.plus_one else " (last label = first token of the next written window)")


def materialized_indices(n_windows: int, target: int, seed: int, salt: int) -> np.ndarray:
    """Window indices for ``target`` draws from ``n_windows``: whole seeded permutations (epochs)
    then a prefix of one more -- no window repeats before all were used."""
    if target <= 0:
        return np.zeros(0, np.int64)
    parts, left, epoch = [], int(target), 0
    while left > 0:
        perm = np.random.default_rng([seed, salt, epoch]).permutation(n_windows)
        parts.append(perm[:left])
        left -= min(left, n_windows)
        epoch += 1
    return np.concatenate(parts).astype(np.int64)


def source_limit(plan: MixturePlan, name: str) -> int | None:
    """Most windows ``name`` may be drawn: ``floor(max_epochs * W)`` (the plan's own rounding), None = no cap."""
    sp = plan.source(name)
    if sp.max_epochs is None:
        return None
    return int(math.floor(sp.max_epochs * sp.n_windows * (1 + CAP_SLACK)))


def batch_targets(plan: MixturePlan, batch: int | None) -> dict[str, int]:
    """Windows per source for a trainer that trains whole batches of ``batch`` sequences.

    Such a trainer draws ``N' = batch * ceil(N / batch)`` sequences. The plan's counts T_i are kept
    and the ``N' - N`` extra ones (0 when N is a whole number of batches) are shared out by largest
    remainder in proportion to T_i among the sources below their epoch cap (a source at its cap is
    skipped and its share goes to the others). Trade-off: the run gets up to ``batch - 1`` more
    windows than planned, at the planned shares to within one window, rather than shares skewed
    towards one source (what OLMo-core's own rounding does). If every active source is at its cap
    the extra cannot be placed: returns the plan's counts (the caller states what the trainer does).
    """
    targets = {s.name: s.target_windows for s in plan.sources if s.target_windows > 0}
    b = max(1, int(batch or 1))
    extra = b * math.ceil(plan.total_windows / b) - plan.total_windows
    while extra > 0:
        room = {n: (None if (lim := source_limit(plan, n)) is None else lim - t) for n, t in targets.items()}
        open_ = [n for n in targets if room[n] is None or room[n] > 0]
        if not open_:
            return {s.name: s.target_windows for s in plan.sources if s.target_windows > 0}
        weights = np.array([plan.source(n).target_windows for n in open_], dtype=np.float64)
        shares = hamilton(weights * extra / weights.sum(), extra)
        for n, k in zip(open_, shares):
            k = int(k) if room[n] is None else min(int(k), room[n])
            targets[n] += k
            extra -= k
    return targets


def dump_yaml(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False, width=120)


def fmt_weight(w: float) -> str:
    return f"{w:.12g}"


def human_count(n: int) -> str:
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def ordered_rows(ctx: ExportContext, src: np.ndarray, rows: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``[len(rows), S]`` windows ``rows[k]`` of source ``names[src[k]]``, in the given order."""
    out = np.empty((rows.size, ctx.seq_len), dtype)
    for i in np.unique(src):
        sel = np.flatnonzero(src == i)
        out[sel] = ctx.windows_s_take(ctx.names[int(i)], dtype, rows[sel])
    return out


def batching_option(ctx: ExportContext) -> int | None:
    """The global batch of ``batching="similarity"`` (None for the shuffle); a ConfigError when the
    option is unknown or the batch is missing."""
    from mixweave.errors import ConfigError

    mode = ctx.options.get("batching", "shuffle")
    if mode not in ("shuffle", "similarity"):
        raise ConfigError(f"batching must be 'shuffle' or 'similarity', got {mode!r}")
    if mode == "shuffle":
        return None
    batch = ctx.options.get("global_batch_size")
    if batch is None or int(batch) < 1:
        raise ConfigError("batching='similarity' needs global_batch_size (sequences per optimizer step, >= 1)")
    return int(batch)


def similarity_order(ctx: ExportContext, global_batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(source index, window row) of every planned draw in similarity-batching order (Lory):
    :class:`mixweave.trainer.sampler.MixtureOrder` with ``batching="similarity"`` over the pack's
    stream order, one pass of ``sum T_i`` draws; read in order, batch k = draws [k*B, (k+1)*B)."""
    from mixweave.trainer.sampler import MixtureOrder, stream_rows

    stream = [stream_rows(ctx.pack_dir, name) for name in ctx.names]
    order = MixtureOrder(ctx.plan, batching="similarity", global_batch=global_batch, stream=stream)
    return order.lookup(np.arange(order.total, dtype=np.int64))


def batch_coherence_report(ctx: ExportContext, global_batch: int, max_batches: int = 1024) -> dict[str, Any]:
    """Mean pairwise cosine of the documents' embeddings within a global batch of ``global_batch``
    windows, for similarity batching, for the shuffled baseline (the trainer's token-weighted
    shuffle) and for one-source batches of randomly ordered windows (``source_shuffle``) side by side, from the embed stage's vectors that the pack manifest names as its input
    (``{"note": ...}`` when the pack has no embed input, e.g. a pack written from arrays)."""
    from mixweave.data.artifacts import load_embeddings
    from mixweave.data.manifest import read_manifest
    from mixweave.data.windows import window_documents
    from mixweave.trainer.sampler import MixtureOrder, batch_coherence, stream_rows

    manifest = read_manifest(ctx.pack_dir) or {}
    embed = (manifest.get("inputs") or {}).get("embed", {}).get("path")
    embed_dir = (ctx.pack_dir / embed).resolve() if embed else None
    if embed_dir is None or read_manifest(embed_dir) is None:
        return {"global_batch": int(global_batch), "note": "the pack names no embed artifact; coherence not measured"}
    names = [s.name for s in ctx.plan.sources if s.target_windows > 0]
    docs = {n: window_documents(ctx.pack_dir, n) for n in names}
    vectors = {n: load_embeddings(embed_dir, n) for n in names}
    stream = [stream_rows(ctx.pack_dir, n) for n in ctx.names]
    out: dict[str, Any] = {"global_batch": int(global_batch), "metric": "mean pairwise cosine within a global batch "
                           "of its windows (window_pairs) and of its distinct documents (doc_pairs), embed stage "
                           "vectors (trainer.sampler.batch_coherence)"}
    for mode in ("similarity", "shuffle"):
        order = MixtureOrder(ctx.plan, batching=mode, global_batch=global_batch, stream=stream)
        out[mode] = batch_coherence(order, docs, vectors, global_batch=global_batch, max_batches=max_batches)
    # the same one-source batches with the windows in random order: what the ICP neighbourhood adds
    # beyond batching by source
    rng = np.random.default_rng([ctx.plan.seed, 5])
    random_stream = [rng.permutation(int(s.n_windows)) for s in ctx.plan.sources]
    order = MixtureOrder(ctx.plan, batching="similarity", global_batch=global_batch, stream=random_stream)
    out["source_shuffle"] = batch_coherence(order, docs, vectors, global_batch=global_batch, max_batches=max_batches)
    return out
