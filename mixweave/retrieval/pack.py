"""Packing ordered documents into fixed-length context windows.

Stream. Documents are concatenated in ``order`` and every document is followed by one
``eos_id`` (Megatron's ``--append-eod`` convention: EOS separates documents and also ends the
last one): ``doc[o0] EOS doc[o1] EOS ...``. Documents cross window boundaries freely; nothing is
padded. Windows and documents are never re-ordered relative to the stream before the final shuffle.

Windows. ``plus_one=False``: window w is ``stream[w*S : (w+1)*S]`` (W = T // S windows of exactly S
tokens; the trainer shifts inputs/labels inside the window and loses one label per window).
``plus_one=True``: window w is ``stream[w*S : w*S + S + 1]``, S+1 tokens, consecutive windows
overlapping by one token (W = (T-1) // S). This is what Megatron-LM's GPTDataset and nanotron
read: inputs ``window[:-1]``, labels ``window[1:]``, every stream token is a label exactly once.
The tail that does not fill a window is dropped and reported (``dropped_tokens`` < S).

Attention sink (``sink_id``, StreamingLLM). Every window starts with the sink token and holds
S - 1 stream tokens after it: ``plus_one=False``: window w is ``[sink] + stream[w*(S-1) :
(w+1)*(S-1)]`` (S tokens; W = T // (S-1)); ``plus_one=True``: ``[sink] + stream[w*(S-1) : w*(S-1)
+ S]`` (S+1 tokens, the stream parts overlapping by one; W = (T-1) // (S-1)). So the window width
(S or S+1) is unchanged, the stream advances S-1 tokens a window, every stream token is still a
label exactly once (with plus_one), and the sink is never a label inside the window. Spans cover
positions 1.. (the sink belongs to no document), so every window metric excludes it.

Shuffle. Windows (not documents) are shuffled with ``seed``, so related documents stay together
inside a window while adjacent windows are unrelated (the ICP README's diversity warning).
The permutation is a seeded Feistel network on ``ceil(log2 W)`` bits with cycle walking
(:func:`shuffled_rows`): the output row of any stream window is computed from (w, W, seed) alone,
so Spark tasks place their windows without a per-window array anywhere (a ``Generator.permutation``
needs all W entries in one process); small and distributed packs use the same bijection.
``window_perm[i]`` is the stream position of output window ``i``.

Spans. For every (window, document) overlap: ``window_id`` (output row), ``doc`` (index into the
input documents), ``start``/``end`` (offsets inside the window, end exclusive) and
``doc_offset`` (offset of ``start`` inside the document's tokens-plus-EOS segment, so the
segment ``doc_offset == len(doc)`` is its EOS). The spans of a window tile it exactly, which is
what intra-document attention masks need.

Ranges. :func:`cut_windows` is the core: the stream windows ``[lo, hi)`` and their spans from the
documents that cover them, given the stream position of the first one. :func:`pack_windows` calls it
once for the whole stream; the Spark pack (``jobs.pack``) calls it per ordered partition for the
windows that *start* in the partition (the documents of the following partitions supply the spill),
with stream positions from prefix sums of per-partition token counts: the same arithmetic, so the
same windows, spans and dropped tail as one process.

Cost: O(T) - the stream is gathered by a numba kernel straight into the window buffer, spans are
vectorised numpy over documents; the shuffle is O(W) integer mixing.
"""

from __future__ import annotations

import hashlib

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mixweave.errors import ConfigError, InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackedWindows:
    windows: np.ndarray  # [W, S] or [W, S+1], int32 or uint16
    window_perm: np.ndarray  # int64 [W]: stream window index of each output row
    span_window: np.ndarray  # int64 [P] sorted by (window, start)
    span_doc: np.ndarray  # int64 [P]
    span_start: np.ndarray  # int64 [P]
    span_end: np.ndarray  # int64 [P]
    span_doc_offset: np.ndarray  # int64 [P]
    seq_len: int
    plus_one: bool
    eos_id: int
    n_docs: int
    stream_tokens: int  # documents + one EOS each
    dropped_tokens: int  # stream tokens in no window (the tail)
    sink_id: int | None = None  # the attention-sink token at position 0 of every window

    @property
    def n_windows(self) -> int:
        return int(self.windows.shape[0])

    def summary(self) -> dict:
        return {
            "seq_len": self.seq_len,
            "window_tokens": self.seq_len + int(self.plus_one),
            "convention": "S+1 overlapping by one (Megatron/nanotron)" if self.plus_one else "S",
            "n_windows": self.n_windows,
            "n_docs": self.n_docs,
            "stream_tokens": self.stream_tokens,
            "dropped_tokens": self.dropped_tokens,
            "docs_split_across_windows": int((np.unique(self.span_doc, return_counts=True)[1] > 1).sum()),
            "sink_id": self.sink_id,
        }



def source_seed(seed: int, name: str) -> int:
    """A per-source seed derived from the run seed and the source's *name* (sha256), so adding or
    removing a source never reshuffles the others (an index in the sorted list would)."""
    digest = hashlib.sha256(f"{int(seed)}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little")

_MASK64 = (1 << 64) - 1
FEISTEL_ROUNDS = 6


def _mix64_int(x: int) -> int:
    """splitmix64's finaliser on a Python int (round keys)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wrapping multiplies)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def shuffled_rows(windows: np.ndarray, n_windows: int, seed: int) -> np.ndarray:
    """Output row (int64) of each stream window in ``windows`` under the seeded bijection of
    ``range(n_windows)``: a balanced Feistel network of :data:`FEISTEL_ROUNDS` rounds (splitmix64
    round function) on the smallest even number of bits >= log2(n_windows), with cycle walking back
    into the range (at most ~4 applications on average, the domain being < 4 n_windows).

    A pure function of (window, n_windows, seed): any subset of windows is placed independently,
    which is what lets Spark tasks write the shuffled pack without a permutation array. Cost
    O(len(windows)) integer operations; quality: a keyed pseudo-random permutation, plenty for
    decorrelating adjacent windows (not a uniform draw over all W! permutations)."""
    w = np.asarray(windows, dtype=np.int64).reshape(-1)
    n = int(n_windows)
    if w.size and (w.min() < 0 or w.max() >= n):
        raise InputError(f"window index outside 0..{n - 1}")
    if n <= 1:
        return w.copy()
    bits = max(2, (n - 1).bit_length())
    bits += bits & 1
    half = bits // 2
    mask, shift = np.uint64((1 << half) - 1), np.uint64(half)
    keys = [np.uint64(_mix64_int(int(seed) + (r + 1) * 0x9E3779B97F4A7C15)) for r in range(FEISTEL_ROUNDS)]

    def feistel(x: np.ndarray) -> np.ndarray:
        left, right = x >> shift, x & mask
        for key in keys:
            left, right = right, left ^ (_mix64(right ^ key) & mask)
        return (left << shift) | right

    out = feistel(w.astype(np.uint64))
    bad = np.flatnonzero(out >= np.uint64(n))
    while bad.size:  # cycle walking: re-apply until the value falls back into range(n)
        out[bad] = feistel(out[bad])
        bad = bad[out[bad] >= np.uint64(n)]
    return out.astype(np.int64)


def stream_step(seq_len: int, sink: bool) -> int:
    """Stream tokens a window advances: S, or S - 1 when every window starts with a sink token."""
    step = int(seq_len) - int(bool(sink))
    if step < 1:
        raise ConfigError(f"seq_len {seq_len} leaves no stream token after the sink; use seq_len >= 2")
    return step


def n_stream_windows(stream_tokens: int, seq_len: int, plus_one: bool, sink: bool = False) -> int:
    """Windows cut from a stream of ``stream_tokens`` tokens (the tail that does not fill one is dropped)."""
    extra, step = int(bool(plus_one)), stream_step(seq_len, sink)
    return (int(stream_tokens) - extra) // step if stream_tokens >= step + extra else 0


@dataclass(frozen=True)
class WindowRange:
    """Stream windows ``[lo, hi)`` cut by :func:`cut_windows` (stream order) and their spans,
    sorted by (stream window, start); ``span_seg`` indexes the documents passed in."""

    lo: int
    hi: int
    windows: np.ndarray  # [hi - lo, width] view (read-only) in the stream buffer
    stream: np.ndarray  # the gathered stream from the first document to the end of window hi - 1
    span_window: np.ndarray  # int64, stream window index
    span_seg: np.ndarray
    span_start: np.ndarray
    span_end: np.ndarray
    span_doc_offset: np.ndarray


def cut_windows(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, *, stream_base: int, lo: int, hi: int,
                seq_len: int, plus_one: bool, eos_id: int, dtype: np.dtype, sink_id: int | None = None) -> WindowRange:
    """Stream windows ``[lo, hi)`` and their spans from consecutive stream documents (the core).

    Document j (in stream order) is ``flat[starts[j]:starts[j] + lengths[j]]`` followed by one EOS;
    the first one begins at stream position ``stream_base``. The documents must cover the windows:
    ``stream_base <= lo * S`` and the last window's last token (``(hi-1) * S + width - 1``) inside
    them. Spans: every (window, document) overlap with offsets as in the module docstring.
    ``sink_id``: windows are the sink + S - 1 stream tokens (module docstring); the coverage
    condition and stream positions then use S - 1 in place of S, and span offsets count the sink.
    Cost O(tokens from stream_base to the end of window hi - 1)."""
    if sink_id is not None:
        step = stream_step(seq_len, True)
        cut = cut_windows(flat, starts, lengths, stream_base=stream_base, lo=lo, hi=hi, seq_len=step,
                          plus_one=plus_one, eos_id=eos_id, dtype=dtype)
        windows = np.empty((cut.windows.shape[0], cut.windows.shape[1] + 1), dtype)
        windows[:, 0] = sink_id
        windows[:, 1:] = cut.windows
        windows.flags.writeable = False
        return WindowRange(lo=cut.lo, hi=cut.hi, windows=windows, stream=cut.stream, span_window=cut.span_window,
                           span_seg=cut.span_seg, span_start=cut.span_start + 1, span_end=cut.span_end + 1,
                           span_doc_offset=cut.span_doc_offset)
    S, extra = int(seq_len), int(bool(plus_one))
    width = S + extra
    lo, hi = int(lo), max(int(lo), int(hi))
    lengths = np.asarray(lengths, np.int64)
    starts = np.asarray(starts, np.int64)
    seg_start = np.zeros(lengths.size + 1, np.int64)
    np.cumsum(lengths + 1, out=seg_start[1:])
    seg_start += int(stream_base)
    need_lo, need_hi = lo * S, (hi * S + extra if hi > lo else lo * S)
    if hi > lo and (need_lo < stream_base or need_hi > seg_start[-1]):
        raise InputError(f"documents cover stream [{stream_base}, {int(seg_start[-1])}) but windows {lo}..{hi - 1} "
                         f"need [{need_lo}, {need_hi})")
    from mixweave.retrieval import _kernels

    stream = np.empty(need_hi - int(stream_base) if hi > lo else 0, dtype)
    if stream.size:
        src = flat if flat.size else np.zeros(1, dtype)
        _kernels.gather_stream(src, starts, lengths, dtype.type(eos_id), stream)
    sub = stream[need_lo - int(stream_base):] if hi > lo else stream
    view = np.lib.stride_tricks.as_strided(sub, shape=(hi - lo, width), strides=(S * sub.itemsize, sub.itemsize),
                                           writeable=False)
    # spans: segment s = [a, b) intersects stream window w = [wS, wS + width)
    a, b = seg_start[:-1], seg_start[1:]
    first = np.maximum(lo, (a - width) // S + 1)
    last = np.minimum(hi - 1, (b - 1) // S)
    count = np.maximum(0, last - first + 1)
    seg_idx = np.repeat(np.arange(lengths.size, dtype=np.int64), count)
    w = np.repeat(first, count) + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
    s_lo = np.maximum(a[seg_idx], w * S)
    s_hi = np.minimum(b[seg_idx], w * S + width)
    sort = np.lexsort((s_lo, w))
    return WindowRange(lo=lo, hi=hi, windows=view, stream=stream, span_window=w[sort], span_seg=seg_idx[sort],
                       span_start=(s_lo - w * S)[sort], span_end=(s_hi - w * S)[sort],
                       span_doc_offset=(s_lo - a[seg_idx])[sort])


def window_long_tokens(span_window: np.ndarray, span_doc: np.ndarray, span_start: np.ndarray,
                       span_end: np.ndarray, doc_tokens: np.ndarray, n_windows: int,
                       min_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """(long-document tokens, stream tokens) of each window, from its spans (``span_doc`` indexes
    ``doc_tokens``, each document's whole tokenized length). O(spans)."""
    span_window = np.asarray(span_window, np.int64)
    length = np.asarray(span_end, np.int64) - np.asarray(span_start, np.int64)
    is_long = np.asarray(doc_tokens, np.int64)[np.asarray(span_doc, np.int64)] >= int(min_tokens)
    stream = np.bincount(span_window, weights=length, minlength=n_windows)[:n_windows]
    long = np.bincount(span_window, weights=length * is_long, minlength=n_windows)[:n_windows]
    return long.astype(np.int64), stream.astype(np.int64)


def long_window_mask(long_tokens: np.ndarray, stream_tokens: np.ndarray) -> np.ndarray:
    """Windows with at least half of their stream tokens from long documents (``mix.phases[].long_docs``,
    :mod:`mixweave.mixers.long_context`)."""
    return (2 * np.asarray(long_tokens) >= np.asarray(stream_tokens)) & (np.asarray(stream_tokens) > 0)


def _as_flat(tokens, offsets) -> tuple[np.ndarray, np.ndarray]:
    if offsets is None:
        if isinstance(tokens, np.ndarray) and tokens.ndim == 1 and tokens.dtype != object:
            raise InputError("a flat token array needs offsets= (length n_docs + 1)")
        seqs = [np.asarray(t, dtype=np.int64).reshape(-1) for t in tokens]
        lengths = np.fromiter((s.size for s in seqs), np.int64, len(seqs))
        flat = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
        offsets = np.zeros(len(seqs) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return flat, offsets
    flat = np.asarray(tokens).reshape(-1)
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or offsets[-1] != flat.size \
            or (np.diff(offsets) < 0).any():
        raise InputError("offsets must start at 0, be non-decreasing and end at len(tokens)")
    return flat, offsets


def _check_dtype(dtype, flat: np.ndarray, eos_id: int, sink_id: int | None = None) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.int32), np.dtype(np.uint16)):
        raise ConfigError(f"window dtype must be int32 or uint16, got {dtype}")
    special = [eos_id] + ([] if sink_id is None else [int(sink_id)])
    hi = max(int(flat.max(initial=0)), *special)
    lo = min(int(flat.min(initial=0)), *special)
    if lo < 0:
        raise InputError(f"token ids must be >= 0 (found {lo})")
    if hi > np.iinfo(dtype).max:
        raise InputError(f"token id {hi} does not fit {dtype}; use dtype=int32")
    return dtype


def pack_windows(
    tokens: Sequence[Sequence[int]] | np.ndarray,
    order: np.ndarray | Sequence[int],
    *,
    seq_len: int,
    eos_id: int,
    offsets: np.ndarray | None = None,
    plus_one: bool = False,
    shuffle: bool = True,
    seed: int = 0,
    dtype: np.dtype | type = np.int32,
    sink_id: int | None = None,
) -> PackedWindows:
    """Concatenate documents along ``order`` with EOS after each, cut windows of exactly
    ``seq_len`` (or ``seq_len + 1`` overlapping, with ``plus_one``) tokens, drop the tail, shuffle
    windows with ``seed``, and record each window's document spans (module docstring).

    ``tokens``: one token sequence per document, or a flat array with ``offsets`` (length
    n_docs + 1; document i is ``tokens[offsets[i]:offsets[i+1]]``). ``order``: document indices
    (a permutation or a subset such as the deduplicated path). ``sink_id``: every window starts
    with this token and holds ``seq_len - 1`` stream tokens after it (module docstring).
    """
    if not isinstance(seq_len, (int, np.integer)) or seq_len < 1:
        raise ConfigError(f"seq_len must be a positive integer, got {seq_len!r}")
    flat, offsets = _as_flat(tokens, offsets)
    n_docs = offsets.size - 1
    dtype = _check_dtype(dtype, flat, int(eos_id), sink_id)
    sink = sink_id is not None
    order = np.asarray(order, dtype=np.int64).reshape(-1)
    if order.size and (order.min() < 0 or order.max() >= n_docs):
        raise InputError(f"order refers to documents outside 0..{n_docs - 1}")

    S, extra = int(seq_len), int(bool(plus_one))
    step = stream_step(S, sink)
    doc_len = np.diff(offsets)[order]
    total = int(doc_len.sum()) + int(order.size)  # + one EOS per document
    n_win = n_stream_windows(total, S, bool(extra), sink)
    used = n_win * step + extra if n_win else 0
    cut = cut_windows(flat, offsets[:-1][order], doc_len, stream_base=0, lo=0, hi=n_win, seq_len=S,
                      plus_one=bool(extra), eos_id=int(eos_id), dtype=dtype, sink_id=sink_id)
    rows = shuffled_rows(np.arange(n_win), n_win, seed) if shuffle else np.arange(n_win, dtype=np.int64)
    perm = np.empty(n_win, np.int64)
    perm[rows] = np.arange(n_win)
    if shuffle or extra or sink:
        windows = cut.windows[perm]  # one copy, in output order
    else:
        windows = cut.stream.reshape(n_win, S)  # no copy
    span_window = rows[cut.span_window] if cut.span_window.size else cut.span_window
    sort = np.lexsort((cut.span_start, span_window))
    packed = PackedWindows(
        windows=windows,
        window_perm=perm,
        span_window=span_window[sort],
        span_doc=order[cut.span_seg][sort],
        span_start=cut.span_start[sort],
        span_end=cut.span_end[sort],
        span_doc_offset=cut.span_doc_offset[sort],
        seq_len=S,
        plus_one=bool(plus_one),
        eos_id=int(eos_id),
        n_docs=int(order.size),
        stream_tokens=total,
        dropped_tokens=total - used,
        sink_id=None if sink_id is None else int(sink_id),
    )
    log.info("pack: %d docs, %d tokens -> %d windows of %d, dropped %d tail tokens",
             order.size, total, n_win, S + extra, total - used)
    return packed


def spans_table(packed: PackedWindows, *, first_window_id: int = 0):
    """``pyarrow.Table`` of spans: window_id, doc (int64), start, end, doc_offset (int32)."""
    import pyarrow as pa

    return pa.table({
        "window_id": pa.array(packed.span_window + first_window_id, pa.int64()),
        "doc": pa.array(packed.span_doc, pa.int64()),
        "start": pa.array(packed.span_start.astype(np.int32)),
        "end": pa.array(packed.span_end.astype(np.int32)),
        "doc_offset": pa.array(packed.span_doc_offset.astype(np.int32)),
    })
