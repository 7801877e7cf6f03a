"""numba kernels behind :mod:`traverse` and :mod:`dedup` (private; import lazily).

Why numba: the ICP walk and union-find are inherently sequential pointer-chasing loops. In
plain Python they cost one interpreter round-trip and several Python objects per document
(~1 KB/doc in the official code); compiled, they run over flat int64/float32 arrays at a few
ns per edge with no per-document objects. Kernels are compiled on first use and cached on disk
(``cache=True``), so only the first process pays the ~1-3 s compile.
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
def order_by_degree(indptr):
    """Documents sorted by (degree, id) with a counting sort: O(n + max degree)."""
    n = indptr.shape[0] - 1
    max_deg = 0
    for u in range(n):
        d = indptr[u + 1] - indptr[u]
        if d > max_deg:
            max_deg = d
    start = np.zeros(max_deg + 2, np.int64)
    for u in range(n):
        start[indptr[u + 1] - indptr[u] + 1] += 1
    for d in range(max_deg + 1):
        start[d + 1] += start[d]
    out = np.empty(n, np.int64)
    for u in range(n):  # ascending u: ids stay ascending within a degree bucket
        d = indptr[u + 1] - indptr[u]
        out[start[d]] = u
        start[d] += 1
    return out


@njit(cache=True)
def greedy_walk(indptr, nbr, wt, start_order):
    """Algorithm 1's walk: move to the unvisited neighbour of highest weight (ties: smaller id);
    when stuck, restart at the first unvisited document of ``start_order``.

    Each document is the current one exactly once and its row is scanned once, and the restart
    pointer only moves forward, so the cost is O(n + E) with no sorting.
    """
    n = indptr.shape[0] - 1
    visited = np.zeros(n, np.bool_)
    path = np.empty(n, np.int64)
    pos = 0
    ptr = 0
    while pos < n:
        while visited[start_order[ptr]]:
            ptr += 1
        cur = start_order[ptr]
        while cur >= 0:
            visited[cur] = True
            path[pos] = cur
            pos += 1
            best = -1
            best_w = np.float32(0.0)
            for e in range(indptr[cur], indptr[cur + 1]):
                v = nbr[e]
                if not visited[v]:
                    w = wt[e]
                    if best < 0 or w > best_w or (w == best_w and v < best):
                        best = v
                        best_w = w
            cur = best
    return path


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
