"""The per-task collection of a reused PySpark Python worker: ``gc.collect()`` (PySpark's daemon) against
:class:`mixweave.jobs.pyspark_daemon.CollectThenFreeze` (mixweave's daemon), side by side.

    .venv/bin/python bench/worker_gc.py [--tasks 200] [--imports embed]

Each side runs in a fresh interpreter that imports what a worker of ours holds after its first task
(``--imports``: ``arrow`` = pyspark.worker, pandas, pyarrow; ``kernels`` = + the numba kernels of dedup
and traversal; ``embed`` = + torch and the default encoder on the torch backend), then runs ``--tasks``
simulated tasks (a pandas frame through Arrow and a few reference cycles each) and after each the
collector the daemon would call. Prints the CPU milliseconds per collection on both sides and their
ratio. The suite's figure (tests marked spark, measured side by side on 2026-12-03): Python workers
spent 54 of ~100 CPU-seconds in that collection over 749 tasks; ``-m spark`` went 331 -> 278 busy
CPU-seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

SIDE = r"""
import gc, json, sys, time
kind, tasks, imports = sys.argv[1], int(sys.argv[2]), sys.argv[3]
import pyspark.worker, pandas as pd, pyarrow as pa
if imports in ("kernels", "embed"):
    from mixweave.retrieval import dedup, traverse  # noqa: F401 - numba kernels, as dedup/order tasks load them
    import numpy as np
    dedup.local_stars(np.array([[0, 1], [1, 2]], np.int64))
if imports == "embed":
    from mixweave.retrieval.encoders import embed_texts, load_encoder
    embed_texts(load_encoder("default", "cpu", backend="torch"), ["a warm-up text"], max_tokens=16)
from mixweave.jobs.pyspark_daemon import CollectThenFreeze
collect = CollectThenFreeze().collect if kind == "freeze" else gc.collect
collect()  # the first task's collection: both sides walk everything once
costs = []
for t in range(tasks):
    frame = pd.DataFrame({"doc_id": [f"d{i}" for i in range(500)], "n": range(500)})
    table = pa.Table.from_pandas(frame)
    cycles = []
    for i in range(200):
        a, b = {}, {}
        a["b"], b["a"] = b, a
        cycles.append(a)
    del frame, table, cycles
    start = time.process_time()
    collect()
    costs.append(time.process_time() - start)
print(json.dumps({"objects": len(gc.get_objects()) + gc.get_freeze_count(), "ms": 1000 * sum(costs) / len(costs)}))
"""


def side(kind: str, tasks: int, imports: str) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    out = subprocess.run([sys.executable, "-c", SIDE, kind, str(tasks), imports], capture_output=True, text=True,
                         env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--imports", default="all", choices=["arrow", "kernels", "embed", "all"])
    args = parser.parse_args()
    print(f"{'worker holds':<10} {'objects':>9} {'gc.collect ms/task':>19} {'collect+freeze ms/task':>23} {'ratio':>7}")
    for imports in (["arrow", "kernels", "embed"] if args.imports == "all" else [args.imports]):
        plain, frozen = side("plain", args.tasks, imports), side("freeze", args.tasks, imports)
        print(f"{imports:<10} {plain['objects']:>9,} {plain['ms']:>19.2f} {frozen['ms']:>23.2f} "
              f"{plain['ms'] / max(frozen['ms'], 1e-6):>6.1f}x")


if __name__ == "__main__":
    main()
