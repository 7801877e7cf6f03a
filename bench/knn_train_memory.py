"""The knn stage's driver-side step (the offline-IVF join's k-means sample and training) at several
corpus sizes: its peak RSS with the sample capped (``ivf_join.TRAIN_MAX_ROWS``) and uncapped
(64 rows a list, nlist ~4 sqrt(N): the sample grows as sqrt(N)), side by side in fresh processes.

    .venv/bin/python bench/knn_train_memory.py                      # N = 1e5, 3e5, 1e6, d = 384
    .venv/bin/python bench/knn_train_memory.py --sizes 100000 1000000 --niter 1

Each row runs in its own process: the sample rows (random unit vectors: memory does not depend on
their values) and ``train_centroids`` with ``--niter`` iterations (memory per iteration is the same,
so 1 is enough for the peak); VmHWM of that process minus its VmRSS after the imports.

Measured (2 shared cores, load ~18; memory figures do not depend on load), d = 384, niter 1:

            N  nlist  rows uncapped  peak MB  rows capped  peak MB
       100000   1024          65536    290.4        65536    291.8
       300000   2048         131072    578.5        65536    291.7
      1000000   4096         262144   1154.4        65536    291.6
    N x10: peak x3.98 uncapped, x1.00 capped

Recall@20 of the in-process join (bench/knn_join.py's two-level data, d = 384, nlist 512, nprobe 8,
N = 20,000): 0.9915 with every row as the sample (64 a list asked, clamped to N), 0.9912 with 32
rows a list, 0.9885 with 16 (the capped sample's share at nlist 4096).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys
import numpy as np
import faiss  # noqa: F401 - imported before the baseline
from mixweave.retrieval.ivf_join import resolve_nlist, train_centroids, train_sample
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
n, d, niter, capped = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
base = status("VmRSS")
nlist = resolve_nlist(n)
size = train_sample(n, nlist).size if capped else min(n, 64 * nlist)
X = np.random.default_rng(0).standard_normal((size, d)).astype(np.float32)
X /= np.linalg.norm(X, axis=1, keepdims=True)
train_centroids(X, nlist, niter=niter)
print(json.dumps({"n": n, "nlist": nlist, "rows": size, "peak_mb": (status("VmHWM") - base) / 2**20}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--niter", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        for capped in (False, True):
            out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(args.d), str(args.niter), str(int(capped))],
                                 capture_output=True, text=True, check=True).stdout
            rows.append(dict(json.loads(out.strip().splitlines()[-1]), capped=capped))
            print(rows[-1], flush=True)
    print(f"{'N':>9} {'nlist':>6} {'rows uncapped':>14} {'peak MB':>8} {'rows capped':>12} {'peak MB':>8}")
    for n in args.sizes:
        u, c = [r for r in rows if r["n"] == n]
        print(f"{n:>9} {u['nlist']:>6} {u['rows']:>14} {u['peak_mb']:>8.1f} {c['rows']:>12} {c['peak_mb']:>8.1f}")
    first, last = [r for r in rows if r["n"] == args.sizes[0]], [r for r in rows if r["n"] == args.sizes[-1]]
    print(f"N x{args.sizes[-1] / args.sizes[0]:.0f}: peak x{last[0]['peak_mb'] / first[0]['peak_mb']:.2f} uncapped, "
          f"x{last[1]['peak_mb'] / first[1]['peak_mb']:.2f} capped")


if __name__ == "__main__":
    main()
