"""Windows of a pack as a PyTorch dataset, and the batch loader the training loop uses.

:class:`PackDataset` reads windows by pack file: item ``i`` (a flat index over the chosen sources)
is found by binary search over the files' row counts (parquet footers), its file decoded whole and
kept in a small LRU cache of files bounded by ``cache_bytes`` (default 1 GiB, at least one file), a
batch decodes each file it touches once. Memory is the cache (+ one batch), whatever the pack's
size; a pack that fits the cache is decoded once, as the old whole-array load was. Trade-off:
uniform random draws over a pack many times the cache decode a file per window drawn from an
evicted file (parquet + zstd: ~1 GB/s), so large runs raise ``cache_bytes`` or use an export.

:class:`MixtureLoader` draws batches synchronously from a :class:`MixtureSampler`, so its
``state_dict()`` (the sampler's global position) is exact after every batch: no prefetched
samples are lost or repeated on resume. ``batching="similarity"`` fills each global batch with
consecutive stream windows of one source (:mod:`mixweave.trainer.sampler`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from mixweave.data.windows import WindowReader, gather_by_file, windows_info
from mixweave.errors import InputError
from mixweave.trainer.plan import MixturePlan
from mixweave.trainer.sampler import MixtureOrder, MixtureSampler, stream_rows

log = logging.getLogger(__name__)


CACHE_BYTES = 1 << 30
"""Default bound of :class:`PackDataset`'s decoded-file cache."""


class PackDataset(Dataset):
    """All windows of ``sources`` (default: every pack source), item ``i`` = one window as int64,
    read by pack file through an LRU cache of decoded files of at most ``cache_bytes``."""

    def __init__(self, pack_dir: str | Path, sources: Sequence[str] | None = None, *, cache_bytes: int = CACHE_BYTES):
        info = windows_info(pack_dir)
        self.pack_dir = Path(pack_dir)
        self.names = tuple(sources) if sources is not None else tuple(sorted(info.sources))
        unknown = [n for n in self.names if n not in info.sources]
        if unknown:
            raise InputError(f"{pack_dir} has no windows for {', '.join(unknown)}; "
                             f"it has {', '.join(sorted(info.sources))}")
        readers = [WindowReader(pack_dir, n, info) for n in self.names]
        self.window_tokens = info.window_tokens
        self.seq_len = info.seq_len
        self.dtype = info.dtype
        self.counts = np.array([r.n_windows for r in readers], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        # every chosen source's files in flat order: file f holds flat rows [bounds[f], bounds[f + 1])
        self._files = [(r, i) for r in readers for i in range(len(r.paths))]
        starts = [off + r.bounds[:-1] for off, r in zip(self.offsets, readers)]
        self._bounds = np.concatenate([*starts, [int(self.counts.sum())]]).astype(np.int64)
        file_bytes = max([int(np.diff(r.bounds).max()) for r in readers if r.paths] + [1]) * self.window_tokens * self.dtype.itemsize
        self.cache_files = max(1, int(cache_bytes) // max(1, file_bytes))
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.decoded = 0  # files decoded so far (cache misses)
        log.info("%d windows of %d tokens in %d files from %s (cache: %d files of <= %.1f MB)", len(self),
                 self.window_tokens, len(self._files), pack_dir, self.cache_files, file_bytes / 1e6)

    def _file(self, f: int) -> np.ndarray:
        block = self._cache.get(f)
        if block is not None:
            self._cache.move_to_end(f)
            return block
        while len(self._cache) >= self.cache_files:
            self._cache.popitem(last=False)
        reader, i = self._files[f]
        table = pq.read_table(reader.paths[i], columns=["tokens"])
        flat = table.column("tokens").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        block = flat.reshape(-1, self.window_tokens).astype(self.dtype, copy=False)
        if block.shape[0] != self._bounds[f + 1] - self._bounds[f]:
            raise InputError(f"{reader.paths[i]} changed since the dataset was opened; re-run the pack stage")
        self._cache[f] = block
        self.decoded += 1
        return block

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """Windows at flat ``indices`` (any order, repeats allowed) in the pack's dtype, each file
        they touch decoded at most once per call."""
        indices = np.asarray(indices, np.int64).reshape(-1)
        out = np.empty((indices.size, self.window_tokens), self.dtype)
        if not indices.size:
            return out
        if indices.min() < 0 or indices.max() >= len(self):
            raise IndexError(f"window index outside 0..{len(self) - 1}")
        return gather_by_file(indices, self._bounds, self._file, out)

    @property
    def windows(self) -> "_Rows":
        """Array-like view of every window (``windows[i]``, slices, index arrays), read through the cache."""
        return _Rows(self)

    def __len__(self) -> int:
        return int(self._bounds[-1])

    def __getitem__(self, i: int) -> torch.Tensor:
        if not -len(self) <= int(i) < len(self):
            raise IndexError(f"window index {i} outside 0..{len(self) - 1}")
        return torch.from_numpy(self.rows(np.array([int(i) % max(1, len(self))]))[0].astype(np.int64))

    def __getitems__(self, indices: Sequence[int]) -> torch.Tensor:
        return self.batch(np.asarray(indices, dtype=np.int64))

    def batch(self, indices: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.rows(indices).astype(np.int64))

    def source_windows(self, name: str) -> np.ndarray:
        """Every window of one source (reads them all: for held-out tails and small sources)."""
        i = self.names.index(name)
        return self.rows(np.arange(self.offsets[i], self.offsets[i] + self.counts[i]))

    def offsets_for(self, plan: MixturePlan) -> np.ndarray:
        """Flat offset of each plan source's first window, in plan order."""
        missing = [n for n in plan.names if n not in self.names]
        if missing:
            raise InputError(f"the dataset was loaded without sources {', '.join(missing)}")
        return np.array([self.offsets[self.names.index(n)] for n in plan.names], dtype=np.int64)


class MixtureLoader:
    """Batches ``[batch_size, window_tokens]`` (int64) for one rank, in the plan's order."""

    def __init__(self, dataset: PackDataset, plan: MixturePlan, batch_size: int, *, rank: int = 0,
                 world_size: int = 1, seed: int | None = None, start: int = 0, num_positions: int | None = None,
                 batching: str = "shuffle", global_batch: int | None = None):
        """``global_batch``: windows per optimizer step over all ranks and micro-steps (default
        ``batch_size * world_size``); similarity batching keeps each such batch in one neighbourhood."""
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        stream = None
        if batching == "similarity":
            stream = []
            for s in plan.sources:  # stream order of the windows the plan may draw (holdout rows excluded)
                rows = stream_rows(dataset.pack_dir, s.name)
                stream.append(rows[rows < s.n_windows])
        self.order = MixtureOrder(plan, seed=seed, batching=batching, stream=stream,
                                  global_batch=global_batch or self.batch_size * world_size)
        self.sampler = MixtureSampler(self.order, dataset.offsets_for(plan), rank=rank, world_size=world_size,
                                      start=start, num_positions=num_positions)

    def next_batch(self) -> torch.Tensor:
        return self.dataset.batch(self.sampler.take(self.batch_size))

    def __iter__(self) -> Iterator[torch.Tensor]:
        while len(self.sampler) >= self.batch_size:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)


class _Rows:
    """``PackDataset.windows``: numpy-style row access (int, slice, index array) through the cache."""

    def __init__(self, dataset: PackDataset):
        self.dataset = dataset
        self.shape = (len(dataset), dataset.window_tokens)
        self.dtype = dataset.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        n = len(self)
        if isinstance(key, slice):
            return self.dataset.rows(np.arange(n)[key])
        if np.ndim(key) == 0:
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"window index {i} outside 0..{n - 1}")
            return self.dataset.rows(np.array([i % n]))[0]
        rows = np.asarray(key)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return self.dataset.rows(np.where(rows < 0, rows + n, rows))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self.dataset.rows(np.arange(len(self)))
        return whole if dtype is None else whole.astype(dtype)
