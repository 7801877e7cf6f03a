"""Spark-path sources one at a time against several at once (``spark.concurrent_sources``), side by side.

    .venv/bin/python bench/concurrent_sources.py                       # 9 fixture sources x 60 docs, local[2]
    .venv/bin/python bench/concurrent_sources.py --docs 30 --rounds 3 --master local[4]

The fixture corpus's nine sources (the first ``--docs`` documents of each) go through ingest and embed
once; then, per round and per setting (1, then ``--concurrent``, alternating which goes first), a copy of
that run goes through knn, dedup, order and pack with every source on its Spark path
(``order.distributed_min_docs: 0``, 3 clusters a source, 3 windows a pack file). Printed: each stage's
wall time per setting (best round), the ratio, the most sources in flight at once, and whether the two
settings wrote the same bytes (every file of the four stages' manifests). Many small sources are where
one-at-a-time submission wastes the most: each source's jobs are a few tasks, and the driver plans
each job while the executors wait.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
STAGES = ("knn", "dedup", "order", "pack")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=60, help="documents per source")
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()
    for key, value in (("HF_HUB_OFFLINE", "1"), ("SPARK_LOCAL_IP", "127.0.0.1"), ("TQDM_DISABLE", "1"),
                       ("PYSPARK_PYTHON", sys.executable), ("PYSPARK_DRIVER_PYTHON", sys.executable)):
        os.environ.setdefault(key, value)
    from conftest import CORPUS, small_config_data, write_subset

    from mixweave.data.manifest import read_manifest
    from mixweave.jobs.spark import get_spark
    from mixweave.pipeline.config import parse_config
    from mixweave.pipeline.runner import run_stages
    from mixweave.pipeline.stages import build_stages

    get_spark(args.master, conf={"spark.sql.shuffle.partitions": "4"})
    stages = build_stages()
    with tempfile.TemporaryDirectory(prefix="mixweave-concurrent-") as tmp:
        tmp = Path(tmp)
        names = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())
        globs = {name: write_subset(tmp / "corpus", name, args.docs) for name in names}

        def config(out: Path, concurrent: int):
            data = small_config_data(out, globs)
            data["order"] = {**data["order"], "distributed_min_docs": 0, "partitions": 3, "pack_file_windows": 3}
            data["spark"] = {"master": args.master, "concurrent_sources": concurrent}
            return parse_config(data)

        base = tmp / "base"
        run_stages(stages, config(base, 1), wanted=["embed"])  # the session above is the active one: reused
        print(f"## {len(names)} sources x {args.docs} documents, {args.master}, every ICP stage on Spark; "
              f"spark.concurrent_sources 1 vs {args.concurrent}, {args.rounds} rounds (best kept)\n")
        best: dict[int, dict[str, float]] = {}
        at_once: dict[int, int] = {}
        files: dict[int, dict] = {}
        for r in range(args.rounds):
            for concurrent in ((1, args.concurrent) if r % 2 == 0 else (args.concurrent, 1)):
                out = tmp / f"run-{concurrent}-{r}"
                shutil.copytree(base, out)
                cfg = config(out, concurrent)
                walls = {}
                for stage in STAGES:
                    t0 = time.perf_counter()
                    run_stages(stages, cfg, wanted=[stage])
                    walls[stage] = time.perf_counter() - t0
                walls["all four"] = sum(walls.values())
                prev = best.setdefault(concurrent, walls)
                best[concurrent] = {k: min(prev[k], walls[k]) for k in walls}
                at_once[concurrent] = max(read_manifest(out / s)["timings"].get("spark_sources_at_once", 0) for s in STAGES)
                files[concurrent] = {s: read_manifest(out / s)["files"] for s in STAGES}
                shutil.rmtree(out)
        one, many = best[1], best[args.concurrent]
        print(f"| stage | one at a time (s) | {args.concurrent} at once (s) | speedup |")
        print("|---|---|---|---|")
        for key in (*STAGES, "all four"):
            print(f"| {key} | {one[key]:.1f} | {many[key]:.1f} | {one[key] / many[key]:.2f}x |")
        same = files[1] == files[args.concurrent]
        print(f"\nmost sources in flight: {at_once[1]} vs {at_once[args.concurrent]}; same bytes: {same}")
        print(json.dumps({"sources": len(names), "docs": args.docs, "master": args.master, "one": one, "many": many,
                          "concurrent": args.concurrent, "same_bytes": same}))
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
