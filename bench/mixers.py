"""Issue 3 benchmark: UtiliMax at 19, 100 and 1,000 sources x 50 benchmarks; UniMax at 10^6 sources.

    .venv/bin/python bench/mixers.py                          # ~10 s
    .venv/bin/python bench/mixers.py --repeats 7 --json bench/results.json

Targets (issue 3): UtiliMax 1,000 x 50 within 1 s on one core; UniMax 10^6 sources within 1 s.

Measured on ONE core: the process pins itself to one CPU (os.sched_setaffinity) and sets
OMP/OpenBLAS/MKL/BLIS/numexpr/Rayon threads to 1 before numpy is imported. Each figure is the
minimum over --repeats runs (the median is printed next to it): the machine is shared, and noise
only ever adds time. The first of those runs is printed too: it is what one ``mixweave mix`` pays
if anything is cached per problem shape. cvxpy's import and first use are paid by a warm-up solve,
reported on their own line.

Rows:
- ``solve()``: the public call, end to end, as a user makes it: validating a {name: tokens}
  mapping and a {source: {benchmark: score}} table, normalising, the solve, the Mixture.
- ``core``: the method on arrays only (UtiliMax: ``utilimax_weights``, i.e. cvxpy building and
  canonicalising the program plus CLARABEL; UniMax: ``unimax_weights``).

Instances: sizes log-uniform in 10^5..10^11 tokens, utilities uniform in [0, 1], max_epochs = 4,
budget = 0.3 x the capacity 4 x sum(sizes), so some caps bind and others do not. Defaults of
solve(): unsquared L2 gap, lam = 1, Sigma = I, min-max normalisation, CLARABEL.
"""

from __future__ import annotations

import os

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "RAYON_NUM_THREADS")
for _var in _THREAD_VARS:  # before numpy (and anything that imports it) is loaded
    os.environ[_var] = "1"
PINNED_CPU = min(os.sched_getaffinity(0))
os.sched_setaffinity(0, {PINNED_CPU})

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from mixweave.mixers import solve  # noqa: E402
from mixweave.mixers.capping import weight_caps  # noqa: E402
from mixweave.mixers.unimax import unimax_weights  # noqa: E402
from mixweave.mixers.utilimax import utilimax_weights  # noqa: E402
from mixweave.mixers.utility_math import normalize_utility  # noqa: E402

MAX_EPOCHS = 4.0
BUDGET_FRACTION = 0.3
N_BENCHMARKS = 50
UTILIMAX_SOURCES = (19, 100, 1000)
UNIMAX_SOURCES = 1_000_000
#: case -> target seconds (issue 3)
TARGETS = {"utilimax 1,000 x 50, solve()": 1.0, "utilimax 1,000 x 50, core": 1.0,
           "unimax 1,000,000, solve()": 1.0, "unimax 1,000,000, core": 1.0}


Row = tuple[str, float, float, float, str]  # case, first, min, median seconds, check


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float, float, object]:
    """(first, min, median) seconds over ``repeats`` calls, and the last result. The first call
    is the one a single ``mixweave mix`` run pays (e.g. a cache that is still empty)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times[0], min(times), statistics.median(times), result


def sizes_of(n_sources: int, rng: np.random.Generator) -> np.ndarray:
    return np.round(10 ** rng.uniform(5, 11, n_sources))


def utilimax_cases(repeats: int) -> list[Row]:
    rows = []
    for n in UTILIMAX_SOURCES:
        rng = np.random.default_rng(n)
        names = [f"src{i:04d}" for i in range(n)]
        sizes = sizes_of(n, rng)
        scores = rng.uniform(size=(n, N_BENCHMARKS))
        sources = dict(zip(names, sizes.tolist()))
        utility = {name: {f"bench{j:02d}": v for j, v in enumerate(row)}
                   for name, row in zip(names, scores.tolist())}
        budget = BUDGET_FRACTION * MAX_EPOCHS * float(sizes.sum())
        first, best, median, mix = timed(lambda: solve(sources, budget, "utilimax",
                                                       max_epochs=MAX_EPOCHS, utility=utility),
                                         repeats)
        capped = sum(b == "epoch_cap" for b in mix.binding.values())
        label = f"utilimax {n:,} x {N_BENCHMARKS}"
        rows.append((f"{label}, solve()", first, best, median,
                     f"{mix.status}, {mix.solver}, {capped}/{n} at the cap"))
        normalised, _ = normalize_utility(scores, "minmax")
        caps = weight_caps(sizes, np.full(n, MAX_EPOCHS), budget)
        first, best, median, result = timed(
            lambda: utilimax_weights(normalised, caps, np.ones(n), 1.0), repeats)
        rows.append((f"{label}, core", first, best, median, result.status))
    return rows


def unimax_cases(repeats: int) -> list[Row]:
    n = UNIMAX_SOURCES
    sizes = sizes_of(n, np.random.default_rng(0))
    sources = dict(zip((f"s{i}" for i in range(n)), sizes.tolist()))
    budget = BUDGET_FRACTION * MAX_EPOCHS * float(sizes.sum())
    first, best, median, mix = timed(lambda: solve(sources, budget, "unimax",
                                                   max_epochs=MAX_EPOCHS), repeats)
    capped = sum(b == "epoch_cap" for b in mix.binding.values())
    rows = [(f"unimax {n:,}, solve()", first, best, median, f"{capped:,}/{n:,} at the cap")]
    first, best, median, weights = timed(lambda: unimax_weights(sizes, budget, MAX_EPOCHS), repeats)
    rows.append((f"unimax {n:,}, core", first, best, median,
                 f"sum(w) - 1 = {weights.sum() - 1:.1e}"))
    return rows


def versions() -> dict[str, str]:
    import cvxpy

    out = {"python": platform.python_version(), "numpy": np.__version__, "cvxpy": cvxpy.__version__}
    try:
        import clarabel

        out["clarabel"] = clarabel.__version__
    except (ImportError, AttributeError):
        pass
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per case; the minimum counts")
    parser.add_argument("--json", default=None, help="merge the figures into this results file "
                        "under the key 'mixers' (other keys are kept)")
    args = parser.parse_args()

    start = time.perf_counter()
    solve({"a": 1e6, "b": 1e5}, 1e5, "utilimax", utility={"a": {"x": 1.0}, "b": {"x": 0.5}})
    warmup = time.perf_counter() - start
    rows = utilimax_cases(args.repeats) + unimax_cases(args.repeats)

    threads = ", ".join(f"{v}={os.environ[v]}" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                         "RAYON_NUM_THREADS"))
    info = versions()
    print(f"mixers benchmark (issue 3): pinned to ONE core (cpu {PINNED_CPU} of {os.cpu_count()}; "
          f"{threads}, ...); first call, then min and median of {args.repeats} runs; "
          "measured/target uses the min")
    print("  " + ", ".join(f"{k} {v}" for k, v in info.items()) + f"; {platform.machine()}")
    print(f"  warm-up (cvxpy import + first solve, not in the rows): {warmup:.2f} s")
    header = (f"{'case':<31}{'first s':>9}{'min s':>9}{'median s':>10}{'target s':>10}"
              f"{'min/target':>17}  check")
    print(header)
    print("-" * (len(header) + 30))
    cases = {}
    for name, first, best, median, check in rows:
        target = TARGETS.get(name)
        ratio = best / target if target else None
        verdict = "" if target is None else ("  met" if ratio <= 1 else "  MISSED")
        print(f"{name:<31}{first:>9.4f}{best:>9.4f}{median:>10.4f}"
              f"{(f'{target:.1f}' if target else '-'):>10}"
              f"{(f'{ratio:.3f}' + verdict) if ratio is not None else '-':>17}  {check}")
        cases[name] = {"first_s": round(first, 5), "min_s": round(best, 5),
                       "median_s": round(median, 5), "target_s": target,
                       "ratio": None if ratio is None else round(ratio, 4), "check": check}

    if args.json:
        path = Path(args.json)
        results = json.loads(path.read_text()) if path.is_file() else {}
        results["mixers"] = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{os.cpu_count()} cores {platform.machine()}, pinned to cpu {PINNED_CPU}",
            "threads": {v: os.environ[v] for v in _THREAD_VARS},
            "repeats": args.repeats, "statistic": "min over repeats (median kept)",
            "versions": info, "warmup_s": round(warmup, 3),
            "instances": {"max_epochs": MAX_EPOCHS, "budget": "0.3 x capacity",
                          "benchmarks": N_BENCHMARKS, "sizes": "log-uniform 1e5..1e11 tokens"},
            "cases": cases,
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
        print(f"merged into {path} under 'mixers'")


if __name__ == "__main__":
    main()
