"""Error messages for every infeasible or malformed request the issue lists (issue 3, Deliver 2).

Each message must name the offending sources (or cells) and, where a number would make the request
feasible, give it. Cases already pinned elsewhere: the UniMax/temperature/proportional budget
message (test_mixers.py::test_infeasible_budget_names_sources_and_largest_budget), uniform/manual
over their caps (test_fixed_weight_methods_report_their_own_largest_budget), single bad counts
(test_bad_sources_raise_input_error), utility-table basics (test_mixers_utility.py); this file adds
the rest.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from mixweave.errors import ConfigError, InfeasibleError, InputError
from mixweave.mixers import mix_from_stats, solve, solve_phases

SIZES = {"web": 1_000_000, "code": 50_000, "wiki": 20_000}  # capacity at 4 epochs: 4,280,000
UTILITY = {"web": {"arc": 1.0, "mbpp": 2.0}, "code": {"arc": 0.5, "mbpp": 1.0},
           "wiki": {"arc": 0.1, "mbpp": 0.3}}


def stats_of(sources: dict) -> dict:
    return {"schema_version": 1,
            "sources": {n: {"n_tokens": t, "n_docs": 1, "paths": []} for n, t in sources.items()}}


# --- a budget the caps cannot absorb ---------------------------------------------------------------

@pytest.mark.parametrize("method, extra", [
    ("unimax", {}), ("temperature", {"tau": 3.33}), ("utilimax", {"utility": UTILITY}),
    ("utilimax", {"utility": UTILITY, "squared": True}), ("weakest_link", {"utility": UTILITY}),
])
def test_budget_over_the_caps_names_sources_and_largest_budget(method, extra):
    with pytest.raises(InfeasibleError) as err:
        solve(SIZES, 5_000_000, method, max_epochs=4, **extra)
    msg = str(err.value)
    for part in ("budget_tokens=5,000,000", "web (1,000,000 tokens x 4)", "code (50,000 tokens x 4)",
                 "wiki (20,000 tokens x 4)", "lower budget_tokens to at most 4,280,000",
                 "raise max_epochs to at least 4.673"):  # 5e6 / 1.07e6
        assert part in msg, (part, msg)


def test_budget_over_per_source_caps_gives_the_capacity_and_no_single_epoch_hint():
    caps = {"web": 4, "code": 2, "wiki": 1}  # 4e6 + 1e5 + 2e4
    with pytest.raises(InfeasibleError) as err:
        solve(SIZES, 5_000_000, "utilimax", max_epochs=caps, utility=UTILITY)
    msg = str(err.value)
    assert "code (50,000 tokens x 2)" in msg and "wiki (20,000 tokens x 1)" in msg
    assert "at most 4,120,000" in msg and "raise max_epochs to at least" not in msg
    # the number quoted is feasible
    mix = solve(SIZES, 4_120_000, "utilimax", max_epochs=caps, utility=UTILITY)
    assert all(mix.binding[n] == "epoch_cap" for n in SIZES)


def test_budget_over_the_caps_with_many_sources_lists_eight_and_counts_the_rest():
    sources = {f"s{i:02d}": 10 for i in range(12)}
    with pytest.raises(InfeasibleError) as err:
        solve(sources, 10_000, "unimax", max_epochs=4)
    msg = str(err.value)
    assert "s07 (10 tokens x 4) and 4 more" in msg and "s08" not in msg
    assert "at most 480" in msg and "at least 83.33" in msg


def test_quoted_largest_budget_is_exactly_feasible_for_every_capped_method():
    for method, extra in [("unimax", {}), ("utilimax", {"utility": UTILITY}),
                          ("weakest_link", {"utility": UTILITY}), ("temperature", {"tau": 2.0})]:
        with pytest.raises(InfeasibleError) as err:
            solve(SIZES, 4_280_001, method, max_epochs=4, **extra)
        largest = int(re.search(r"at most ([\d,]+)", str(err.value)).group(1).replace(",", ""))
        mix = solve(SIZES, largest, method, max_epochs=4, **extra)
        assert max(mix.epochs.values()) <= 4 * (1 + 1e-9), method


# --- source counts: zero, NaN, negative ------------------------------------------------------------

@pytest.mark.parametrize("method, extra", [("proportional", {}), ("unimax", {}),
                                           ("utilimax", {"utility": UTILITY})])
def test_zero_token_sources_are_all_named(method, extra):
    sources = {"web": 1_000_000, "code": 0, "wiki": 0}
    with pytest.raises(InputError, match=r"sources code, wiki have 0 tokens.*remove them"):
        solve(sources, 100_000, method, **extra)


def test_zero_token_source_from_stats_json():
    with pytest.raises(InputError, match=r"sources wiki have 0 tokens.*fix their paths"):
        mix_from_stats(stats_of({"web": 1000, "wiki": 0}), method="unimax", budget_tokens=100,
                       max_epochs=4)


@pytest.mark.parametrize("bad, match", [
    ({"code": float("nan")}, r"sources code are NaN or infinite"),
    ({"code": np.float64("nan"), "wiki": np.inf}, r"sources code, wiki are NaN or infinite"),
    ({"code": -1}, r"sources code are negative"),
    ({"code": -50_000, "wiki": -1.5}, r"sources code, wiki are negative"),
    ({"code": np.int64(-3)}, r"sources code are negative"),
])
def test_nan_and_negative_counts_name_every_source(bad, match):
    with pytest.raises(InputError, match=match):
        solve({**SIZES, **bad}, 100_000, "unimax")
    with pytest.raises(InputError, match=match):  # the same through stats.json
        mix_from_stats(stats_of({**SIZES, **bad}), method="unimax", budget_tokens=100_000,
                       max_epochs=4)


def test_nan_counts_in_a_large_plain_mapping_are_still_named():
    """The vectorised validation of plain {name: number} mappings falls back to the named check."""
    sources = {f"s{i}": float(i + 1) for i in range(5000)}
    sources["s4321"] = float("nan")
    with pytest.raises(InputError, match=r"sources s4321 are NaN"):
        solve(sources, 100, "unimax")


# --- utility table missing a source or a benchmark ------------------------------------------------

@pytest.mark.parametrize("method", ["utilimax", "weakest_link"])
def test_utility_table_missing_sources_names_them(method):
    utility = {"web": UTILITY["web"]}
    with pytest.raises(InputError, match=r"no scores for sources code, wiki.*re-run the utility"):
        solve(SIZES, 100_000, method, utility=utility)


@pytest.mark.parametrize("method", ["utilimax", "weakest_link"])
def test_utility_table_missing_a_benchmark_names_the_cells(method):
    utility = {**UTILITY, "wiki": {"arc": 0.1}}  # wiki has no mbpp score
    with pytest.raises(InputError, match=r"missing source/benchmark cells wiki/mbpp"):
        solve(SIZES, 100_000, method, utility=utility)
    long = pd.DataFrame([{"source": s, "benchmark": b, "score": v} for s, row in UTILITY.items()
                         for b, v in row.items() if (s, b) not in {("wiki", "mbpp"), ("code", "arc")}])
    with pytest.raises(InputError, match=r"cells code/arc, wiki/mbpp"):
        solve(SIZES, 100_000, method, utility=long)


def test_utility_std_missing_cells_are_named():
    std = {s: {b: 0.1 for b in row} for s, row in UTILITY.items()}
    del std["code"]["mbpp"]
    with pytest.raises(InputError, match=r"utility std table is missing source/benchmark cells code/mbpp"):
        solve(SIZES, 100_000, "utilimax", utility=UTILITY, utility_std=std)


def test_utility_missing_source_through_mix_from_stats():
    with pytest.raises(InputError, match=r"no scores for sources wiki"):
        mix_from_stats(stats_of(SIZES), method="weakest-link", budget_tokens=100_000, max_epochs=4,
                       utility={"web": UTILITY["web"], "code": UTILITY["code"]})


# --- weights that do not parse -----------------------------------------------------------------------

@pytest.mark.parametrize("weights, match", [
    ({"web": "0.5", "code": 1, "wiki": 1}, r"fix web='0.5'$"),
    ({"web": 1, "code": None, "wiki": True}, r"fix code=None, wiki=True$"),
    ({"web": 1, "code": float("inf"), "wiki": -0.1}, r"fix code=inf, wiki=-0.1$"),
    ({"web": [1], "code": 1, "wiki": 1}, r"fix web=\[1\]$"),
    ([0.5, 0.3, 0.2], r"needs weights=\{source: weight, \.\.\.\}"),
    ("web=0.5,code=0.3,wiki=0.2", r"needs weights=\{source: weight, \.\.\.\}"),
    ({}, r"needs weights=\{source: weight, \.\.\.\}"),
])
def test_unparseable_manual_weights(weights, match):
    with pytest.raises(ConfigError, match=match):
        solve(SIZES, 100_000, "manual", weights=weights)


def test_unparseable_phase_weights():
    with pytest.raises(ConfigError, match=r"manual weights must be finite numbers >= 0; fix web='x'"):
        solve_phases(SIZES, [(100_000, {"web": "x", "code": 1, "wiki": 1})])
    with pytest.raises(ConfigError, match=r"phase 1: the second item must be a weights mapping"):
        solve_phases(SIZES, [(100_000, "unimax"), (100_000, [0.5, 0.3, 0.2])], max_epochs=4)
