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

Similarity batching (``batching="similarity"``, Lory: Zhong et al. 2024). Global batch k is
positions ``[k*G, (k+1)*G)`` (G = windows per optimizer step, all ranks). Instead of the shuffle,
each source's T_i draws of a pass run through its ICP *stream* (the pack's windows before its
Feistel shuffle, recovered by :func:`stream_rows`): epoch e starts at a seeded random stream
window and walks the next W_i consecutive ones (wrapping), so no window repeats before all were
used. The draws are cut into runs of G consecutive draws: each full run is one batch of
neighbouring windows of one source; the ``T_i mod G`` leftovers of all sources, kept in stream
order and grouped by source, fill the mixed batches. The batches are shuffled with the seed (a
short last batch, when N is not a multiple of G, stays last). Per-source counts are exactly T_i,
the order is a pure function of (seed, plan, G), and the state is still one position. Cost per
pass: O(N/G + sum_i (T_i mod G)) integers; a lookup is O(1) per position. Trade-off: gradients of
one step see one neighbourhood (Lory's point for MoE routing) at the price of more variance
between steps than the shuffle; :func:`batch_coherence` measures what it buys.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from torch.utils.data import Sampler

from mixweave.errors import ConfigError, InputError
from mixweave.trainer.plan import MixturePlan

DEFAULT_CHUNK = 8192
BATCHING = ("shuffle", "similarity")


class MixtureOrder:
    """Which (source index, window index) is drawn at each global position (module docstring)."""

    def __init__(self, plan: MixturePlan, *, seed: int | None = None, chunk: int = DEFAULT_CHUNK,
                 batching: str = "shuffle", global_batch: int | None = None,
                 stream: Sequence[np.ndarray] | None = None):
        """``batching="similarity"``: batches of ``global_batch`` windows from one ICP neighbourhood
        (module docstring); ``stream[i]``: source i's window indices in stream order (default: the
        identity, for packs written unshuffled)."""
        if batching not in BATCHING:
            raise ConfigError(f"batching must be one of {', '.join(BATCHING)}, got {batching!r}")
        if batching == "similarity" and (global_batch is None or int(global_batch) < 1):
            raise ConfigError("similarity batching needs the global batch size (windows per optimizer step, >= 1)")
        self.batching = batching
        self.global_batch = int(global_batch or 1)
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
        self._units: OrderedDict[int, tuple] = OrderedDict()
        if stream is not None and len(stream) != len(self.targets):
            raise InputError(f"stream orders for {len(stream)} sources, the plan has {len(self.targets)}")
        self.stream = None if stream is None else [np.asarray(s, np.int64) for s in stream]
        if self.stream is not None:
            for i, (s, w) in enumerate(zip(self.stream, self.n_windows)):
                if s.size != int(w):
                    raise InputError(f"source {plan.names[i]}: stream order of {s.size} windows, the plan has {int(w)}")

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

    def _similarity_units(self, p: int) -> tuple:
        """Pass ``p`` of similarity batching: the shuffled batch order, each full batch's (source,
        first draw), the mixed batches' flat (source, draw) list, and each epoch's stream start."""
        hit = self._units.get(p)
        if hit is not None:
            return hit
        G, k = self.global_batch, len(self.targets)
        full = self.targets // G
        unit_src = np.repeat(np.arange(k, dtype=np.int64), full)
        unit_j0 = (np.arange(unit_src.size, dtype=np.int64) - np.repeat(np.cumsum(full) - full, full)) * G
        tail_src = np.repeat(np.arange(k, dtype=np.int64), self.targets - full * G)
        tail_j = np.concatenate([np.arange(full[i] * G, self.targets[i], dtype=np.int64) for i in range(k)])
        n_units = unit_src.size + -(-tail_src.size // G)
        rng = np.random.default_rng([self.seed, p, 3])
        if self.total % G:  # the short batch stays last so every other batch is whole
            perm = np.concatenate([rng.permutation(n_units - 1), [n_units - 1]]).astype(np.int64)
        else:
            perm = rng.permutation(n_units).astype(np.int64)
        max_epochs = -(-self.targets // np.maximum(self.n_windows, 1))
        starts = [np.random.default_rng([self.seed, p, 4, i]).integers(0, max(1, int(self.n_windows[i])),
                                                                       size=max(1, int(max_epochs[i])))
                  for i in range(k)]
        result = (perm, unit_src, unit_j0, tail_src, tail_j, starts)
        self._units[p] = result
        if len(self._units) > 2:
            self._units.popitem(last=False)
        return result

    def _lookup_similarity(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        passes, local = np.divmod(positions, self.total)
        src = np.empty(positions.size, np.int64)
        win = np.empty(positions.size, np.int64)
        G = self.global_batch
        for p in np.unique(passes):
            m = passes == p
            perm, unit_src, unit_j0, tail_src, tail_j, starts = self._similarity_units(int(p))
            unit, off = np.divmod(local[m], G)
            u = perm[unit]
            is_full = u < unit_src.size
            s, j = np.empty(u.size, np.int64), np.empty(u.size, np.int64)
            s[is_full], j[is_full] = unit_src[u[is_full]], unit_j0[u[is_full]] + off[is_full]
            t = (u[~is_full] - unit_src.size) * G + off[~is_full]
            s[~is_full], j[~is_full] = tail_src[t], tail_j[t]
            w = np.empty(u.size, np.int64)
            for i in np.unique(s):
                sel = s == i
                n = int(self.n_windows[i])
                epoch, step = np.divmod(j[sel], n)
                pos = (starts[i][epoch] + step) % n  # consecutive stream windows from a seeded start per epoch
                w[sel] = pos if self.stream is None else self.stream[i][pos]
            src[m], win[m] = s, w
        return src, win

    def lookup(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source index, window index) for each global position (any position >= 0)."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.batching == "similarity":
            return self._lookup_similarity(positions)
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
        state = {"position": self.position, "seed": self.order.seed, "total": self.order.total,
                 "world_size": self.world_size}
        if self.order.batching != "shuffle":
            state.update(batching=self.order.batching, global_batch=self.order.global_batch)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        same_seed = int(state.get("seed", self.order.seed)) == self.order.seed
        if not same_seed or int(state.get("total", self.order.total)) != self.order.total:
            raise InputError("the sampler state belongs to another plan or seed (different mixture, pack or "
                             "holdout); resume with the same inputs or start a fresh run")
        mine = (self.order.batching, self.order.global_batch if self.order.batching != "shuffle" else None)
        theirs = (state.get("batching", "shuffle"), state.get("global_batch"))
        if mine != theirs:
            raise InputError(f"the sampler state was written with batching {theirs[0]} (global batch {theirs[1]}), "
                             f"this run uses {mine[0]} (global batch {mine[1]}); resume with the same settings")
        self.position = int(state["position"])
        self._buf = None


def stream_rows(pack_dir: str | Path, source: str) -> np.ndarray:
    """Output rows of ``source``'s windows in ICP stream order (``[W]``: row of stream window w).

    The pack shuffles windows with :func:`mixweave.retrieval.pack.shuffled_rows` keyed by
    :func:`~mixweave.retrieval.pack.source_seed` of the run seed (both in the pack manifest's config);
    a pack written unshuffled (or by :func:`mixweave.data.windows.write_pack_artifact`, which records
    no shuffle) is its own stream order. Cost O(W)."""
    from mixweave.data.manifest import require_manifest
    from mixweave.retrieval.pack import shuffled_rows, source_seed

    manifest = require_manifest(pack_dir, "pack")
    n = int(manifest["windows"]["sources"][source]["n_windows"])
    config = manifest.get("config") or {}
    if not config.get("shuffle") or "seed" not in config:
        return np.arange(n, dtype=np.int64)
    return shuffled_rows(np.arange(n, dtype=np.int64), n, source_seed(int(config["seed"]), source))


def batch_coherence(order: MixtureOrder, window_docs: Mapping[str, tuple[np.ndarray, np.ndarray]],
                    vectors: Mapping[str, np.ndarray], *, global_batch: int, max_batches: int = 1024) -> dict:
    """How related the windows of a global batch are, over the first ``max_batches`` batches of
    ``order`` (batch k = positions [k*G, (k+1)*G)), from the embed stage's document vectors.

    ``window_docs[name] = (indptr [W+1], docs)``: the documents of each window (CSR over its spans,
    :func:`mixweave.data.windows.window_documents`); ``vectors[name]``: the source's document vectors.
    Two figures, both means over batches of a mean pairwise cosine, computed in closed form
    ``(|sum v|^2 - sum |v|^2) / (n (n - 1))`` (O(n d) per batch):

    * ``window_pairs``: the G windows of the batch, a window's vector being the normalised mean of its
      documents' vectors (two windows inside one long document score 1);
    * ``doc_pairs``: the distinct documents of the batch, over the ``doc_batches`` batches that hold
      at least two (a batch inside one document has no pair).

    Returns {batches, window_pairs, doc_pairs, doc_batches}."""
    G = int(global_batch)
    n_batches = max(0, min(int(max_batches), order.total // G))
    names = order.plan.names

    def pair_mean(x: np.ndarray) -> float | None:
        n = x.shape[0]
        if n < 2:
            return None
        total = x.sum(0)
        return (float(total @ total) - float((x * x).sum())) / (n * (n - 1))

    win_scores, doc_scores = [], []
    for b in range(n_batches):
        src, win = order.lookup(np.arange(b * G, (b + 1) * G, dtype=np.int64))
        win_vecs, doc_vecs = [], []
        for i in np.unique(src):
            indptr, docs = window_docs[names[i]]
            X = vectors[names[i]]
            for r in win[src == i]:
                v = np.asarray(X[docs[indptr[r]:indptr[r + 1]]], np.float64).mean(0)
                win_vecs.append(v / max(float(np.linalg.norm(v)), 1e-12))
            ids = np.unique(np.concatenate([docs[indptr[r]:indptr[r + 1]] for r in win[src == i]]))
            doc_vecs.append(np.asarray(X[ids], np.float64))
        w = pair_mean(np.stack(win_vecs))
        d = pair_mean(np.concatenate(doc_vecs))
        if w is not None:
            win_scores.append(w)
        if d is not None:
            doc_scores.append(d)
    return {"batches": len(win_scores), "window_pairs": float(np.mean(win_scores)) if win_scores else None,
            "doc_pairs": float(np.mean(doc_scores)) if doc_scores else None, "doc_batches": len(doc_scores)}
