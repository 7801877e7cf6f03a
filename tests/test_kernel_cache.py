"""``python -m mixweave.retrieval._kernels`` (make install / make test) compiles the numba kernels for the
types the ICP code passes, so no process compiles at run time."""

from __future__ import annotations

import subprocess
import sys

WORKLOAD = r"""
import numpy as np
from mixweave.retrieval import _kernels
from mixweave.retrieval.dedup import semantic_dedup
from mixweave.retrieval.pack import pack_windows
from mixweave.retrieval.partition import refine_labels
from mixweave.retrieval.traverse import traverse, traverse_clustered

_kernels.compile_cached()
kernels = {n: k for n, k in vars(_kernels).items() if hasattr(k, "signatures")}
warmed = {n: set(k.signatures) for n, k in kernels.items()}
rng = np.random.default_rng(0)
n, k = 40, 5
I = np.array([rng.permutation(n)[:k] for _ in range(n)], np.int64)
I[I == np.arange(n)[:, None]] = -1
D = rng.random((n, k)).astype(np.float32)
D_ro = D.copy(); D_ro.setflags(write=False)  # as a memory-mapped kNN shard arrives
for d in (D, D_ro):
    traverse(I, d)
    traverse_clustered(I, d, np.arange(n) % 3)
semantic_dedup(I, D, threshold=0.5)
refine_labels(I, D, np.arange(n, dtype=np.int64) % 4)
docs = [list(rng.integers(0, 50000, 7)) for _ in range(n)]
for dtype in (np.uint16, np.int32):
    pack_windows(docs, np.arange(n), seq_len=16, eos_id=50256, dtype=dtype)
new = {name: sorted(map(str, set(kernel.signatures) - warmed[name])) for name, kernel in kernels.items()}
print({name: sigs for name, sigs in new.items() if sigs})
"""


def test_the_icp_kernels_compile_ahead_for_every_type_the_code_passes():
    out = subprocess.run([sys.executable, "-c", WORKLOAD], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "{}"  # no kernel met a type compile_cached left out
