"""Windows of a pack as a PyTorch dataset, and the batch loader the training loop uses.

:class:`PackDataset` holds every window of the chosen sources in one in-memory array
``[sum W_i, window_tokens]`` in the tokenizer's dtype (2 bytes a token for GPT-2: a 1B-token pack
is 2 GB) -- random access is a row lookup, a batch is one fancy-index gather. That is the right
trade-off for the toolkit's own trainer (ablations, small runs); large runs use an export.

:class:`MixtureLoader` draws batches synchronously from a :class:`MixtureSampler`, so its
``state_dict()`` (the sampler's global position) is exact after every batch: no prefetched
samples are lost or repeated on resume. ``batching="similarity"`` fills each global batch with
consecutive stream windows of one source (:mod:`mixweave.trainer.sampler`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mixweave.data.windows import read_windows, windows_info
from mixweave.errors import InputError
from mixweave.trainer.plan import MixturePlan
from mixweave.trainer.sampler import MixtureOrder, MixtureSampler, stream_rows

log = logging.getLogger(__name__)


class PackDataset(Dataset):
    """All windows of ``sources`` (default: every pack source), item ``i`` = one window as int64."""

    def __init__(self, pack_dir: str | Path, sources: Sequence[str] | None = None):
        info = windows_info(pack_dir)
        self.pack_dir = Path(pack_dir)
        self.names = tuple(sources) if sources is not None else tuple(sorted(info.sources))
        unknown = [n for n in self.names if n not in info.sources]
        if unknown:
            raise InputError(f"{pack_dir} has no windows for {', '.join(unknown)}; "
                             f"it has {', '.join(sorted(info.sources))}")
        parts = [read_windows(pack_dir, n) for n in self.names]
        self.window_tokens = info.window_tokens
        self.seq_len = info.seq_len
        self.counts = np.array([p.shape[0] for p in parts], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.windows = np.concatenate(parts) if parts else np.zeros((0, info.window_tokens), info.dtype)
        log.info("loaded %d windows of %d tokens from %s (%.1f MB)", len(self), self.window_tokens,
                 pack_dir, self.windows.nbytes / 1e6)

    def __len__(self) -> int:
        return int(self.windows.shape[0])

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.windows[i].astype(np.int64))

    def __getitems__(self, indices: Sequence[int]) -> torch.Tensor:
        return self.batch(np.asarray(indices, dtype=np.int64))

    def batch(self, indices: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.windows[indices].astype(np.int64))

    def source_windows(self, name: str) -> np.ndarray:
        i = self.names.index(name)
        return self.windows[self.offsets[i]:self.offsets[i] + self.counts[i]]

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
