"""Time every mixing method on N sources, side by side in one run, and print ratios.

    .venv/bin/python bench/mixers.py                 # N = 10, 100, 1000 (well under a minute)
    .venv/bin/python bench/mixers.py --sizes 10 100 --benchmarks 16 --repeats 5

Ratios are relative to UniMax at the same N (the cheapest capped method); "cold" is a first solve
(cvxpy builds and canonicalises the program), "warm" a re-solve of the cached DPP program with new
parameter values, and the last column is warm / cold. No assertions: this prints, nothing more.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from mixweave.mixers import solve
from mixweave.mixers.utilimax import _utilimax_program
from mixweave.mixers.weakest_link import _weakest_link_program


def median_seconds(fn: Callable[[], object], repeats: int, before: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def problem(n_sources: int, n_benchmarks: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    names = [f"src{i:04d}" for i in range(n_sources)]
    sizes = dict(zip(names, map(float, np.round(10 ** rng.uniform(5, 11, n_sources)))))
    utility = {n: {f"bench{j}": float(rng.uniform()) for j in range(n_benchmarks)} for n in names}
    budget = 0.3 * 4 * sum(sizes.values())  # between compute- and data-constrained: some caps bind
    return sizes, utility, budget


def run(sizes_list: list[int], n_benchmarks: int, repeats: int) -> None:
    header = f"{'N':>5} {'method':<22} {'median ms':>10} {'x unimax':>9} {'warm/cold':>9}"
    print(header)
    print("-" * len(header))
    for n in sizes_list:
        sizes, utility, budget = problem(n, n_benchmarks)
        quick = max(repeats, 20)
        rows: list[tuple[str, float, float | None]] = []

        def closed(method: str, **kw) -> float:
            return median_seconds(lambda: solve(sizes, budget, method, max_epochs=4, **kw), quick)

        base = closed("unimax")
        rows.append(("unimax", base, None))
        rows.append(("proportional", closed("proportional"), None))
        rows.append(("uniform(no cap)", median_seconds(lambda: solve(sizes, budget, "uniform"), quick), None))
        rows.append(("temperature(tau=3.33)", closed("temperature", tau=3.33), None))
        for label, method, cache, extra in [
            ("utilimax", "utilimax", _utilimax_program, {}),
            ("utilimax(squared)", "utilimax", _utilimax_program, {"squared": True}),
            ("weakest_link", "weakest_link", _weakest_link_program, {}),
        ]:
            def once(lam: float = 1.0) -> None:
                solve(sizes, budget, method, max_epochs=4, utility=utility, lam=lam, **extra)

            cold = median_seconds(once, repeats, before=cache.cache_clear)
            once()  # make sure the program for this shape is cached
            lams = iter(np.linspace(0.1, 2.0, 1000))
            warm = median_seconds(lambda: once(float(next(lams))), repeats)
            rows.append((f"{label} cold", cold, None))
            rows.append((f"{label} warm", warm, warm / cold))
        for label, seconds, warm_ratio in rows:
            ratio = f"{seconds / base:9.1f}"
            extra_col = f"{warm_ratio:9.2f}" if warm_ratio is not None else f"{'':>9}"
            print(f"{n:>5} {label:<22} {seconds * 1e3:>10.2f} {ratio} {extra_col}")
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--benchmarks", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    start = time.perf_counter()
    run(args.sizes, args.benchmarks, args.repeats)
    print(f"total {time.perf_counter() - start:.1f} s; N sources, {args.benchmarks} benchmarks, "
          f"budget = 0.3 x capacity at max_epochs = 4")


if __name__ == "__main__":
    main()
