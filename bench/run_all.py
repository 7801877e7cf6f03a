"""`make bench`: run every benchmark in bench/ that this machine can run; write bench/results.json.

Each benchmark prints its own side-by-side table (measured vs baseline/target, as ratios); this
runner keeps each one's stdout, exit status and wall time, and lets the benchmarks that support
``--json`` merge their figures into the same results file. GPU-only parts (vllm, faiss-gpu, bf16
training) are skipped by the benchmarks themselves where CUDA is absent.

    python bench/run_all.py [--json bench/results.json] [--only ingest,mixers] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (script, extra args, supports --json PATH, extra args with --quick)
BENCHMARKS = {
    "ingest": ("ingest.py", [], True, []),
    "mixers": ("mixers.py", [], True, ["--repeats", "2"]),
    "icp": ("icp.py", [], True, ["--quick"]),
    "export": ("export.py", [], False, ["--tokens", "1000000", "--repeat", "1"]),
    "trainer": ("trainer.py", [], False, ["--steps", "4"]),
    "benchmark_eval": ("benchmark_eval.py", [], False, ["--repeats", "1"]),
    "medu": ("medu.py", [], False, []),
    "worker_gc": ("worker_gc.py", [], False, ["--tasks", "50"]),
    "tokenizer": ("tokenizer_speed.py", [], False, ["--repeats", "2"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(HERE / "results.json"))
    parser.add_argument("--only", default="", help="comma-separated subset")
    parser.add_argument("--quick", action="store_true", help="smaller sizes where a benchmark offers them")
    args = parser.parse_args()
    results_path = Path(args.json)
    wanted = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    runs = {}
    for name in wanted:
        script, extra, takes_json, quick = BENCHMARKS[name]
        cmd = [sys.executable, str(HERE / script), *extra, *(quick if args.quick else [])]
        if takes_json:
            cmd += ["--json", str(results_path)]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        print(proc.stdout)
        if proc.returncode != 0:
            print(f"[{name} exited {proc.returncode}]\n{proc.stderr[-2000:]}")
        runs[name] = {"exit": proc.returncode, "seconds": round(seconds, 1), "stdout": proc.stdout[-6000:]}
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results["_run"] = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {platform.machine()}, "
                       f"Python {platform.python_version()}", "benchmarks": runs}
    results_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"\nwrote {results_path}")


if __name__ == "__main__":
    main()
