"""numba kernels behind :mod:`traverse` and :mod:`dedup` (private; import lazily).

Why numba: the ICP walk and union-find are inherently sequential pointer-chasing loops. In
plain Python they cost one interpreter round-trip and several Python objects per document
(~1 KB/doc in the official code); compiled, they run over flat int64/float32 arrays at a few
ns per edge with no per-document objects. Kernels are cached on disk (``cache=True``) and compiled
ahead by ``make install`` / ``make test`` (:func:`compile_cached`), so no process pays the compile
(~10 CPU-s for all of them); a type not compiled ahead compiles on first use.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def symmetric_csr(n, src, dst, weight):
    """Undirected CSR from directed edges ``src -> dst``.

    Each edge is inserted in both directions (counting sort by row), then parallel edges are
    merged keeping the maximum weight, using a per-document "slot" array instead of sorting.
    Rows keep insertion order (not sorted by weight). Inputs must already be valid
    (0 <= id < n, no self loops). Cost O(n + E); memory 2E ids + weights + one int64 per doc.
    """
    n_edges = src.shape[0]
    indptr = np.zeros(n + 1, np.int64)
    for e in range(n_edges):
        indptr[src[e] + 1] += 1
        indptr[dst[e] + 1] += 1
    for u in range(n):
        indptr[u + 1] += indptr[u]
    nbr = np.empty(2 * n_edges, np.int64)
    wt = np.empty(2 * n_edges, np.float32)
    fill = indptr[:-1].copy()
    for e in range(n_edges):
        a, b, w = src[e], dst[e], weight[e]
        nbr[fill[a]] = b
        wt[fill[a]] = w
        fill[a] += 1
        nbr[fill[b]] = a
        wt[fill[b]] = w
        fill[b] += 1

    out_indptr = np.zeros(n + 1, np.int64)
    slot = np.full(n, -1, np.int64)  # slot[v]: where v sits in the current row (stale if < row start)
    write = 0
    for u in range(n):
        row_start = write
        for t in range(indptr[u], indptr[u + 1]):  # write <= t: in-place compaction is safe
            v, w = nbr[t], wt[t]
            p = slot[v]
            if p >= row_start:
                if w > wt[p]:
                    wt[p] = w
            else:
                slot[v] = write
                nbr[write] = v
                wt[write] = w
                write += 1
        out_indptr[u + 1] = write
    return out_indptr, nbr[:write].copy(), wt[:write].copy()


@njit(cache=True)
def _find(parent, x):
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@njit(cache=True)
def union_find_min_root(n, a, b):
    """Connected components of the pairs (a[i], b[i]); each document's label is the smallest
    index in its component (union by smaller root + path compression). O((n + P) log n)."""
    parent = np.arange(n)
    for e in range(a.shape[0]):
        ra = _find(parent, a[e])
        rb = _find(parent, b[e])
        if ra < rb:
            parent[rb] = ra
        elif rb < ra:
            parent[ra] = rb
    for i in range(n):
        parent[i] = _find(parent, i)
    return parent


@njit(cache=True)
def gather_stream(flat, starts, lengths, eos_id, out):
    """Fill ``out`` with ``flat[starts[0]:+lengths[0]] EOS flat[starts[1]:...] EOS ...`` until it
    is full (the packing stream's used prefix). O(len(out)), no temporaries."""
    pos = 0
    size = out.shape[0]
    for s in range(starts.shape[0]):
        if pos >= size:
            break
        a = starts[s]
        m = min(lengths[s], size - pos)
        for t in range(m):
            out[pos + t] = flat[a + t]
        pos += m
        if pos < size:
            out[pos] = eos_id
            pos += 1
    return pos


# --------------------------------------------------------------------------------------------
# Array-native traversal (used by ``traverse`` / ``traverse_clustered``).
#
# The symmetrised graph is never materialised as one merged CSR. Each document's out-list is its
# own kNN row ``I[u]`` / ``D[u]`` (read in place), and only the reverse adjacencies are built: a
# counting-sort transpose of the kNN lists ("in-lists": who lists u). The walk scans both lists;
# a neighbour present in both (or twice in a row) is simply seen twice, which cannot change the
# winner (the highest weight of a pair of parallel edges wins either way, ties by smaller id), so
# the result is exactly Algorithm 1 over the max-merged undirected graph. The distinct-neighbour
# degree is counted per row by merging the sorted out-list with the (already ascending) in-list.
#
# Why: the merged-CSR build (``symmetric_csr``) costs 2E scattered writes, E temporaries of
# (src, dst, weight) and a dedup pass over a slot array: 1.75 GB peak and 2.9 s at N=1e6, k=20
# on one core (~17 GB extrapolated to 1e7). This path writes E scattered entries once (int32 ids
# below 2^31 documents), keeps no temporaries and visits a bitset that stays in L2: 0.61 GB and
# 1.75 s at 1e6, 4.5 GB (2.3 GB of it the input) and 29 s at 1e7 (bench/icp.py).
# --------------------------------------------------------------------------------------------


@njit(cache=True)
def knn_in_lists(I, D, id_proto):
    """Transpose of the valid kNN entries: for each v, the rows u that list v (ascending u) with
    the weights ``D[u, j]``. ``id_proto`` (empty array) fixes the id dtype (int32 when N < 2^31).
    Entries with id < 0 or id == row are skipped. O(Nk), one scattered write per entry."""
    n, k = I.shape
    indptr = np.zeros(n + 1, np.int64)
    for u in range(n):
        for j in range(k):
            v = I[u, j]
            if v >= 0 and v != u:
                indptr[v + 1] += 1
    for u in range(n):
        indptr[u + 1] += indptr[u]
    n_entries = indptr[n]
    src = np.empty(n_entries, id_proto.dtype)
    wt = np.empty(n_entries, np.float32)
    fill = indptr[:-1].copy()
    for u in range(n):
        for j in range(k):
            v = I[u, j]
            if v >= 0 and v != u:
                p = fill[v]
                src[p] = u
                wt[p] = D[u, j]
                fill[v] = p + 1
    return indptr, src, wt


@njit(cache=True)
def knn_degrees(I, in_ptr, in_src):
    """Distinct neighbours of each document in the symmetrised graph: |out(u) ∪ in(u)| with
    out(u) = valid ids of row u (insertion-sorted in a k-slot buffer) and in(u) ascending."""
    n, k = I.shape
    deg = np.empty(n, np.int64)
    buf = np.empty(max(k, 1), np.int64)
    for u in range(n):
        m = 0
        for j in range(k):
            v = I[u, j]
            if v >= 0 and v != u:
                t = m
                while t > 0 and buf[t - 1] > v:
                    buf[t] = buf[t - 1]
                    t -= 1
                buf[t] = v
                m += 1
        count = 0
        a = 0
        b = in_ptr[u]
        b_end = in_ptr[u + 1]
        last = -1
        while a < m or b < b_end:
            if b >= b_end or (a < m and buf[a] <= in_src[b]):
                x = buf[a]
                a += 1
            else:
                x = np.int64(in_src[b])
                b += 1
            if x != last:
                count += 1
                last = x
        deg[u] = count
    return deg


@njit(cache=True)
def order_by_value(values):
    """Indices sorted by (values, index) for small non-negative ints: counting sort, O(n + max)."""
    n = values.shape[0]
    top = 0
    for u in range(n):
        if values[u] > top:
            top = values[u]
    start = np.zeros(top + 2, np.int64)
    for u in range(n):
        start[values[u] + 1] += 1
    for d in range(top + 1):
        start[d + 1] += start[d]
    out = np.empty(n, np.int64)
    for u in range(n):
        d = values[u]
        out[start[d]] = u
        start[d] += 1
    return out


@njit(cache=True)
def knn_walk(I, D, in_ptr, in_src, in_wt, start_order):
    """Algorithm 1's walk over out-lists (kNN rows) and in-lists: move to the unvisited neighbour
    of highest weight (ties: smaller id); when stuck, restart at the first unvisited document of
    ``start_order``. Visited flags are a bitset (N/8 bytes). O(N + Nk)."""
    n, k = I.shape
    visited = np.zeros((n + 63) >> 6, np.uint64)
    one = np.uint64(1)
    path = np.empty(n, np.int64)
    pos = 0
    ptr = 0
    while pos < n:
        while (visited[start_order[ptr] >> 6] >> np.uint64(start_order[ptr] & 63)) & one:
            ptr += 1
        cur = start_order[ptr]
        while cur >= 0:
            visited[cur >> 6] |= one << np.uint64(cur & 63)
            path[pos] = cur
            pos += 1
            best = -1
            best_w = np.float32(0.0)
            for j in range(k):
                v = I[cur, j]
                if v < 0 or v == cur:
                    continue
                if not (visited[v >> 6] >> np.uint64(v & 63)) & one:
                    w = D[cur, j]
                    if best < 0 or w > best_w or (w == best_w and v < best):
                        best = v
                        best_w = w
            for e in range(in_ptr[cur], in_ptr[cur + 1]):
                v = np.int64(in_src[e])
                if not (visited[v >> 6] >> np.uint64(v & 63)) & one:
                    w = in_wt[e]
                    if best < 0 or w > best_w or (w == best_w and v < best):
                        best = v
                        best_w = w
            cur = best
    return path


@njit(cache=True)
def mask_cross_cluster(I, labels):
    """Copy of ``I`` with every entry whose neighbour lies in another cluster set to -1."""
    n, k = I.shape
    out = np.empty_like(I)
    for u in range(n):
        lu = labels[u]
        for j in range(k):
            v = I[u, j]
            out[u, j] = v if v >= 0 and labels[v] == lu else -1
    return out


@njit(cache=True)
def cluster_local_knn(I, D, members, labels, local_id):
    """kNN rows of ``members`` (documents grouped by cluster) restricted to their own cluster and
    renumbered to cluster-local ids, exactly as ``restrict_knn(I, D, labels == c)`` does for each
    cluster: kept neighbours in their original order, then ``-1`` / ``-inf`` padding."""
    n, k = I.shape
    I_out = np.full((n, k), -1, np.int32)
    D_out = np.full((n, k), -np.inf, np.float32)
    for r in range(n):
        u = members[r]
        lu = labels[u]
        t = 0
        for j in range(k):
            v = I[u, j]
            if v >= 0 and labels[v] == lu:
                I_out[r, t] = local_id[v]
                D_out[r, t] = D[u, j]
                t += 1
    return I_out, D_out


@njit(cache=True)
def refine_labels_round(I, D, labels, n_labels):
    """One synchronous round of weighted majority vote over the kNN rows: each document moves to
    the cluster holding the largest sum of max(cosine, 0) among its listed neighbours (old labels
    throughout). Ties keep the current cluster, else the smaller label. O(Nk), one score array."""
    n, k = I.shape
    out = labels.copy()
    score = np.zeros(n_labels, np.float64)
    for u in range(n):
        for j in range(k):
            v = I[u, j]
            if v >= 0 and v != u:
                w = D[u, j]
                score[labels[v]] += w if w > 0 else 0.0
        cur = labels[u]
        best = cur
        best_s = score[cur]
        for j in range(k):
            v = I[u, j]
            if v >= 0 and v != u:
                c = labels[v]
                s = score[c]
                if s > best_s or (s == best_s and best != cur and c < best):
                    best = c
                    best_s = s
        out[u] = best
        for j in range(k):
            v = I[u, j]
            if v >= 0:
                score[labels[v]] = 0.0
    return out


def compile_cached() -> int:
    """Compile every kernel for the argument types mixweave passes and write them to numba's disk
    cache (``make install`` and ``make test`` run it: ``python -m mixweave.retrieval._kernels``), so no
    process compiles at run time: without it, the first processes of a fresh install (Spark Python
    workers, CLI runs) each compiled the same kernels, ~7 CPU-seconds apiece, until one had written
    the cache. A type not listed here still compiles on first use, as before. Returns how many
    signatures it compiled or loaded; ~1 s when the cache is already warm."""
    from numba import types

    i64, i32, f32, u16 = types.int64, types.int32, types.float32, types.uint16

    def arr(dtype, ndim=1, readonly=False):
        return types.Array(dtype, ndim, "C", readonly=readonly)

    I, D, D_ro = arr(i64, 2), arr(f32, 2), arr(f32, 2, readonly=True)  # kNN ids, cosines (a memory map: read-only)
    signatures = {
        union_find_min_root: [(i64, arr(i64), arr(i64))],  # compiles _find with it
        symmetric_csr: [(i64, arr(i64), arr(i64), arr(f32))],
        order_by_value: [(arr(i64),)],
        mask_cross_cluster: [(I, arr(i64))],
        cluster_local_knn: [(I, D, arr(i64), arr(i64), arr(i64))],
        refine_labels_round: [(I, D, arr(i64), i64)],
        knn_in_lists: [(I, d, arr(p)) for d in (D, D_ro) for p in (i32, i64)],
        knn_degrees: [(I, arr(i64), arr(p)) for p in (i32, i64)],
        knn_walk: [(I, d, arr(i64), arr(p), arr(f32), arr(i64)) for d in (D, D_ro) for p in (i32, i64)],
        gather_stream: [(arr(flat), arr(i64), arr(i64), tok, arr(tok))
                        for flat in (i64, i32) for tok in (u16, i32)],  # the window dtypes pack allows
    }
    for kernel, sigs in signatures.items():
        for sig in sigs:
            kernel.compile(sig)
    return sum(len(s) for s in signatures.values())


if __name__ == "__main__":
    print(f"numba kernels: {compile_cached()} signatures compiled into the cache")
