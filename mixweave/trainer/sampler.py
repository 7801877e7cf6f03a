"""Token-weighted, deterministic, resumable sampling order over a :class:`MixturePlan`.

Order. One *pass* is N = sum(T_i) draws: source i exactly T_i times (its planned windows, so its
target tokens are met and its epochs stay within the cap). The sequence of sources is a uniformly
random arrangement of that multiset, generated lazily in chunks of B positions: the counts of each
source in chunk c are one multivariate hypergeometric draw from what is left (exact, sequential,
k numbers per chunk), and the labels inside a chunk are a seeded permutation. The j-th draw of
source i is window ``perm_{i,e}[j mod W_i]`` with epoch ``e = j // W_i`` and a fresh seeded
permutation per epoch, so no window repeats before every window of its source was used.

Positions past N start another pass with a new seed (logged by the trainer: it over-trains the plan).

Cost: O(N/B * k) to precompute chunk counts (a 1T-token run at S=2048, B=8192 is ~60k draws); one
chunk costs O(B) to materialise plus O(W_i) per new epoch permutation (cached). State for exact
resume is a single integer -- the global position -- because everything else is a pure function
of (seed, plan).

Sharding. Global position n belongs to rank ``n % world_size``: ranks are disjoint and together
cover every position; with equal per-rank batches they advance in lockstep, so the global position
after a step is the same on every rank.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator

import numpy as np
from torch.utils.data import Sampler

from mixweave.errors import InputError
from mixweave.trainer.plan import MixturePlan

DEFAULT_CHUNK = 8192


class MixtureOrder:
    """Which (source index, window index) is drawn at each global position (module docstring)."""

    def __init__(self, plan: MixturePlan, *, seed: int | None = None, chunk: int = DEFAULT_CHUNK):
        self.plan = plan
        self.seed = int(plan.seed if seed is None else seed)
        self.chunk = int(chunk)
        self.targets = plan.target_windows
        self.n_windows = plan.n_windows
        self.total = int(self.targets.sum())
        if self.total < 1:
            raise InputError("the plan draws no windows; nothing to sample")
        self._counts: dict[int, np.ndarray] = {}  # pass -> [C, k] counts per chunk
        self._bases: dict[int, np.ndarray] = {}  # pass -> [C + 1, k] draws before each chunk
        self._chunks: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._perms: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return self.total

    def _chunk_counts(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        if p not in self._counts:
            rng = np.random.default_rng([self.seed, p, 0])
            n_chunks = -(-self.total // self.chunk)
            left = self.targets.copy()
            counts = np.zeros((n_chunks, len(left)), np.int64)
            for c in range(n_chunks):
                size = min(self.chunk, int(left.sum()))
                counts[c] = rng.multivariate_hypergeometric(left, size, method="marginals")
                left -= counts[c]
            bases = np.zeros((n_chunks + 1, len(left)), np.int64)
            np.cumsum(counts, axis=0, out=bases[1:])
            self._counts[p], self._bases[p] = counts, bases
        return self._counts[p], self._bases[p]

    def _perm(self, p: int, i: int, epoch: int) -> np.ndarray:
        key = (p, i, epoch)
        perm = self._perms.get(key)
        if perm is None:
            perm = np.random.default_rng([self.seed, p, 2, i, epoch]).permutation(int(self.n_windows[i]))
            self._perms[key] = perm
            if len(self._perms) > 4 * len(self.targets) + 4:
                self._perms.popitem(last=False)
        return perm

    def _chunk(self, p: int, c: int) -> tuple[np.ndarray, np.ndarray]:
        key = (p, c)
        hit = self._chunks.get(key)
        if hit is not None:
            self._chunks.move_to_end(key)
            return hit
        counts, bases = self._chunk_counts(p)
        k = len(self.targets)
        labels = np.random.default_rng([self.seed, p, 1, c]).permutation(np.repeat(np.arange(k), counts[c]))
        order = np.argsort(labels, kind="stable")
        group_start = np.concatenate([[0], np.cumsum(counts[c])[:-1]])
        rank = np.empty(labels.size, np.int64)
        rank[order] = np.arange(labels.size) - np.repeat(group_start, counts[c])
        draw = bases[c][labels] + rank  # j: how many draws of that source came before
        windows = np.empty(labels.size, np.int64)
        for i in range(k):
            sel = labels == i
            if not sel.any():
                continue
            j = draw[sel]
            w = int(self.n_windows[i])
            epochs = j // w
            out = np.empty(j.size, np.int64)
            for e in np.unique(epochs):
                m = epochs == e
                out[m] = self._perm(p, i, int(e))[j[m] % w]
            windows[sel] = out
        result = (labels.astype(np.int64), windows)
        self._chunks[key] = result
        if len(self._chunks) > 4:
            self._chunks.popitem(last=False)
        return result

    def lookup(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source index, window index) for each global position (any position >= 0)."""
        positions = np.asarray(positions, dtype=np.int64)
        passes, local = np.divmod(positions, self.total)
        chunks = local // self.chunk
        src = np.empty(positions.size, np.int64)
        win = np.empty(positions.size, np.int64)
        keys = passes * (self.total // self.chunk + 2) + chunks
        for key in np.unique(keys):
            m = keys == key
            p, c = int(passes[m][0]), int(chunks[m][0])
            labels, windows = self._chunk(p, c)
            idx = local[m] - c * self.chunk
            src[m], win[m] = labels[idx], windows[idx]
        return src, win


class MixtureSampler(Sampler[int]):
    """A torch-style sampler of flat window indices for one rank (``offsets[i]`` = index of
    source i's first window in the dataset). Iterating yields positions ``start + rank +
    j * world_size``; :meth:`state_dict` is the global position of the next unserved draw."""

    BLOCK = 4096  # draws looked up at once

    def __init__(self, order: MixtureOrder, offsets: np.ndarray, *, rank: int = 0, world_size: int = 1,
                 start: int = 0, num_positions: int | None = None):
        if not 0 <= rank < world_size:
            raise InputError(f"rank must be in 0..{world_size - 1}, got {rank}")
        self.order = order
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.rank, self.world_size = int(rank), int(world_size)
        self.position = int(start)  # global position of the next draw (a multiple of world_size)
        self.end = int(start) + (order.total if num_positions is None else int(num_positions))
        self._buf: np.ndarray | None = None
        self._buf_start = 0

    def __len__(self) -> int:
        return max(0, -(-(self.end - self.position - self.rank) // self.world_size))

    def _lookup(self, start: int, n: int) -> np.ndarray:
        src, win = self.order.lookup(start + self.rank + self.world_size * np.arange(n, dtype=np.int64))
        return self.offsets[src] + win

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` flat indices of this rank (advances the position by n * world_size).

        Indices are computed in blocks of ``BLOCK`` draws and served from the block, so small batches
        do not pay the lookup overhead each time; the position (the state) advances per call."""
        j = (self.position - self._buf_start) // self.world_size
        if self._buf is None or j < 0 or j + n > len(self._buf):
            self._buf_start, j = self.position, 0
            self._buf = self._lookup(self.position, max(n, self.BLOCK))
        out = self._buf[j:j + n]
        self.position += n * self.world_size
        return out

    def __iter__(self) -> Iterator[int]:
        while len(self):
            n = min(len(self), 1024)
            yield from (int(i) for i in self.take(n))

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "seed": self.order.seed, "total": self.order.total,
                "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        same_seed = int(state.get("seed", self.order.seed)) == self.order.seed
        if not same_seed or int(state.get("total", self.order.total)) != self.order.total:
            raise InputError("the sampler state belongs to another plan or seed (different mixture, pack or "
                             "holdout); resume with the same inputs or start a fresh run")
        self.position = int(state["position"])
        self._buf = None
