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

Shuffle. Windows (not documents) are shuffled with ``seed``, so related documents stay together
inside a window while adjacent windows are unrelated (the ICP README's diversity warning).
``window_perm[i]`` is the stream position of output window ``i``.

Spans. For every (window, document) overlap: ``window_id`` (output row), ``doc`` (index into the
input documents), ``start``/``end`` (offsets inside the window, end exclusive) and
``doc_offset`` (offset of ``start`` inside the document's tokens-plus-EOS segment, so the
segment ``doc_offset == len(doc)`` is its EOS). The spans of a window tile it exactly, which is
what intra-document attention masks need.

Cost: O(T) - the stream is gathered by a numba kernel straight into the window buffer, spans are
vectorised numpy over documents. Per Spark partition the tail is dropped per partition (< S tokens).
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
        }



def source_seed(seed: int, name: str) -> int:
    """A per-source seed derived from the run seed and the source's *name* (sha256), so adding or
    removing a source never reshuffles the others (an index in the sorted list would)."""
    digest = hashlib.sha256(f"{int(seed)}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little")

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


def _check_dtype(dtype, flat: np.ndarray, eos_id: int) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.int32), np.dtype(np.uint16)):
        raise ConfigError(f"window dtype must be int32 or uint16, got {dtype}")
    hi = max(int(flat.max(initial=0)), eos_id)
    lo = min(int(flat.min(initial=0)), eos_id)
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
) -> PackedWindows:
    """Concatenate documents along ``order`` with EOS after each, cut windows of exactly
    ``seq_len`` (or ``seq_len + 1`` overlapping, with ``plus_one``) tokens, drop the tail, shuffle
    windows with ``seed``, and record each window's document spans (module docstring).

    ``tokens``: one token sequence per document, or a flat array with ``offsets`` (length
    n_docs + 1; document i is ``tokens[offsets[i]:offsets[i+1]]``). ``order``: document indices
    (a permutation or a subset such as the deduplicated path).
    """
    if not isinstance(seq_len, (int, np.integer)) or seq_len < 1:
        raise ConfigError(f"seq_len must be a positive integer, got {seq_len!r}")
    flat, offsets = _as_flat(tokens, offsets)
    n_docs = offsets.size - 1
    dtype = _check_dtype(dtype, flat, int(eos_id))
    order = np.asarray(order, dtype=np.int64).reshape(-1)
    if order.size and (order.min() < 0 or order.max() >= n_docs):
        raise InputError(f"order refers to documents outside 0..{n_docs - 1}")

    S, extra = int(seq_len), int(bool(plus_one))
    width = S + extra
    doc_len = np.diff(offsets)[order]
    seg_len = doc_len + 1  # + EOS
    seg_start = np.zeros(order.size + 1, np.int64)
    np.cumsum(seg_len, out=seg_start[1:])
    total = int(seg_start[-1])
    n_win = (total - extra) // S if total >= width else 0
    used = n_win * S + extra if n_win else 0

    # gather the used prefix of the stream (numba: one pass, no int64 temporaries per token)
    from mixweave.retrieval import _kernels

    stream = np.empty(used, dtype)
    if used:
        src = flat if flat.size else np.zeros(1, dtype)
        _kernels.gather_stream(src, offsets[:-1][order], doc_len, dtype.type(eos_id), stream)
    # a strided view: window w starts at w*S and is `width` long (overlapping by one if plus_one)
    view = np.lib.stride_tricks.as_strided(stream, shape=(n_win, width), strides=(S * stream.itemsize,
                                           stream.itemsize), writeable=False)
    perm = np.random.default_rng(seed).permutation(n_win) if shuffle else np.arange(n_win)
    if shuffle or extra:
        windows = view[perm]  # one copy, in output order
    else:
        windows = stream.reshape(n_win, S)  # no copy
    inverse = np.empty(n_win, np.int64)
    inverse[perm] = np.arange(n_win)

    # spans: segment s = [a, b) intersects stream window w = [wS, wS + width)
    a, b = seg_start[:-1], seg_start[1:]
    first = np.maximum(0, (a - width) // S + 1)
    last = np.minimum(n_win - 1, (b - 1) // S)
    count = np.maximum(0, last - first + 1)
    seg_idx = np.repeat(np.arange(order.size, dtype=np.int64), count)
    w = np.repeat(first, count) + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
    lo = np.maximum(a[seg_idx], w * S)
    hi = np.minimum(b[seg_idx], w * S + width)
    span_window = inverse[w] if w.size else w
    sort = np.lexsort((lo - w * S, span_window))
    packed = PackedWindows(
        windows=windows,
        window_perm=perm.astype(np.int64),
        span_window=span_window[sort],
        span_doc=order[seg_idx][sort],
        span_start=(lo - w * S)[sort],
        span_end=(hi - w * S)[sort],
        span_doc_offset=(lo - a[seg_idx])[sort],
        seq_len=S,
        plus_one=bool(plus_one),
        eos_id=int(eos_id),
        n_docs=int(order.size),
        stream_tokens=total,
        dropped_tokens=total - used,
    )
    log.info("pack: %d docs, %d tokens -> %d windows of %d, dropped %d tail tokens",
             order.size, total, n_win, width, total - used)
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
