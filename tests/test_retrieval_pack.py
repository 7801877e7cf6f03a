"""Packing: exact window sizes, stream prefix, spans tiling, shuffle, plus_one convention."""

from __future__ import annotations

import numpy as np
import pytest

from mixweave.errors import ConfigError, InputError
from mixweave.retrieval.pack import pack_windows, spans_table

EOS = 0


def random_docs(seed: int, n: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 1000, size=int(rng.integers(0, 30))) for _ in range(n)]


def eos_stream(docs, order) -> np.ndarray:
    return np.concatenate([np.append(docs[i], EOS) for i in order]) if len(order) else np.zeros(0, int)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("plus_one", [False, True])
def test_windows_are_exact_stream_prefix_and_spans_tile(seed, plus_one):
    docs = random_docs(seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(docs))[: len(docs) - seed % 3]  # subsets allowed (after dedup)
    S = int(rng.integers(1, 40))
    p = pack_windows(docs, order, seq_len=S, eos_id=EOS, plus_one=plus_one, seed=seed)
    stream = eos_stream(docs, order)
    width = S + plus_one
    W = p.n_windows
    assert p.windows.shape == (W, width) and p.windows.dtype == np.int32
    assert W == ((len(stream) - plus_one) // S if len(stream) >= width else 0)
    assert p.stream_tokens == len(stream)
    assert p.dropped_tokens == len(stream) - (W * S + plus_one if W else 0)
    assert 0 <= p.dropped_tokens < (S if W else width)
    # un-shuffle: stream order windows
    unshuffled = np.empty_like(p.windows)
    unshuffled[p.window_perm] = p.windows
    if plus_one:
        for w in range(W):
            assert np.array_equal(unshuffled[w], stream[w * S: w * S + S + 1])
    else:
        assert np.array_equal(unshuffled.reshape(-1), stream[: W * S])
    # spans tile every window and point at the right tokens
    for w in range(W):
        rows = np.flatnonzero(p.span_window == w)
        assert p.span_start[rows][0] == 0 and p.span_end[rows][-1] == width
        assert np.array_equal(p.span_start[rows][1:], p.span_end[rows][:-1])
        for r in rows:
            seg = np.append(docs[p.span_doc[r]], EOS)
            length = p.span_end[r] - p.span_start[r]
            got = p.windows[w, p.span_start[r]:p.span_end[r]]
            assert np.array_equal(got, seg[p.span_doc_offset[r]:p.span_doc_offset[r] + length])


def test_small_worked_example():
    docs = [[1, 2, 3], [4, 5], [], [6, 7, 8, 9, 10], [11]]
    p = pack_windows(docs, [4, 0, 1, 2, 3], seq_len=4, eos_id=EOS, shuffle=False)
    assert p.windows.tolist() == [[11, 0, 1, 2], [3, 0, 4, 5], [0, 0, 6, 7], [8, 9, 10, 0]]
    assert p.dropped_tokens == 0
    q = pack_windows(docs, [4, 0, 1, 2, 3], seq_len=4, eos_id=EOS, shuffle=False, plus_one=True)
    assert q.windows.tolist() == [[11, 0, 1, 2, 3], [3, 0, 4, 5, 0], [0, 0, 6, 7, 8]]
    assert q.dropped_tokens == 3  # 9, 10, EOS: no full S+1 window left
    assert list(zip(q.span_doc[:2].tolist(), q.span_end[:2].tolist())) == [(4, 2), (0, 5)]


def test_flat_tokens_with_offsets_equal_list_input_and_shuffle_is_seeded():
    docs = random_docs(3, 60)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    flat = np.concatenate(docs)
    order = np.arange(60)[::-1]
    a = pack_windows(docs, order, seq_len=16, eos_id=EOS, seed=5)
    b = pack_windows(flat, order, offsets=offsets, seq_len=16, eos_id=EOS, seed=5)
    c = pack_windows(flat, order, offsets=offsets, seq_len=16, eos_id=EOS, seed=6)
    assert np.array_equal(a.windows, b.windows) and np.array_equal(a.span_doc, b.span_doc)
    assert not np.array_equal(a.window_perm, c.window_perm)
    assert sorted(c.window_perm.tolist()) == list(range(c.n_windows))


def test_uint16_windows_and_spans_table():
    docs = [[1, 2, 3], [4, 5, 6, 7]]
    p = pack_windows(docs, [0, 1], seq_len=3, eos_id=65535, dtype=np.uint16, shuffle=False)
    assert p.windows.dtype == np.uint16 and p.windows.tolist() == [[1, 2, 3], [65535, 4, 5], [6, 7, 65535]]
    s = spans_table(p)
    assert s.column_names == ["window_id", "doc", "start", "end", "doc_offset"]
    assert s.num_rows == p.span_doc.size
    with pytest.raises(InputError):
        pack_windows([[70000]], [0], seq_len=2, eos_id=0, dtype=np.uint16)


def test_empty_and_bad_inputs():
    p = pack_windows([[1, 2]], [0], seq_len=8, eos_id=EOS)
    assert p.n_windows == 0 and p.dropped_tokens == 3 and p.span_doc.size == 0
    with pytest.raises(ConfigError):
        pack_windows([[1]], [0], seq_len=0, eos_id=EOS)
    with pytest.raises(InputError):
        pack_windows([[1]], [3], seq_len=2, eos_id=EOS)
    with pytest.raises(InputError):
        pack_windows(np.array([1, 2, 3]), [0], seq_len=2, eos_id=EOS)  # flat tokens need offsets
    with pytest.raises(InputError):
        pack_windows([[-4]], [0], seq_len=2, eos_id=EOS)
