"""solve() and the closed-form mixers: published vectors, brute-force references, errors."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest

from mixweave.errors import ConfigError, InfeasibleError, InputError
from mixweave.mixers import METHODS, Mixture, SourceSize, mix_from_stats, solve
from mixweave.mixers.capping import project_onto_capped_simplex, water_fill
from mixweave.mixers.temperature import temperature_weights
from mixweave.mixers.unimax import unimax_token_budgets

# kgnlp/unimax (pypi unimax-sampling): character counts, budget 250e9, N = 4.
KGNLP_SIZES = {"swe": 179_955_884_499, "fas": 184_595_788_282, "ekk": 42_541_080_893,
               "isl": 10_027_573_389, "fao": 549_707_867}
KGNLP_BUDGETS = {"fao": 2_198_831_468, "isl": 40_110_293_556, "ekk": 69_230_291_658.67,
                 "swe": 69_230_291_658.67, "fas": 69_230_291_658.67}

# Dolma v1.7 (billions of OLMo tokens) and the reference's computed anchor columns.
DOLMA = {"cc": 1195.5, "falcon": 456.4, "starcoder": 263.8, "c4": 138.4, "reddit": 79.9,
         "pes2o": 57.2, "arxiv": 28.0, "stackexchange": 19.6, "flan": 16.5, "ccnews": 14.3,
         "openwebmath": 12.6, "algebraic": 12.6, "books": 5.3, "megawika": 4.6, "wiki": 3.7}
DOLMA_TOKENS = {k: v * 1e9 for k, v in DOLMA.items()}
DOLMA_PROPORTIONAL = [.5179, .1977, .1143, .0600, .0346, .0248, .0121, .0085, .0071, .0062,
                      .0055, .0055, .0023, .0020, .0016]
DOLMA_UNIMAX_2316B = [.1402, .1402, .1402, .1402, .1380, .0988, .0484, .0339, .0285, .0247,
                      .0218, .0218, .0092, .0079, .0064]


def weights_of(mix: Mixture) -> np.ndarray:
    return np.array(list(mix.weights.values()))


def water_fill_unimax_reference(sizes: np.ndarray, budget: float, cap: float) -> np.ndarray:
    """Independent UniMax reference: budgets min(cap * n_i, t) with t found by bisection."""
    lo, hi = 0.0, budget
    for _ in range(200):
        t = 0.5 * (lo + hi)
        lo, hi = (t, hi) if np.minimum(cap * sizes, t).sum() < budget else (lo, t)
    return np.minimum(cap * sizes, 0.5 * (lo + hi))


# --- published vectors ---------------------------------------------------------------------------

def test_unimax_kgnlp_vector():
    mix = solve(KGNLP_SIZES, 250e9, "unimax", max_epochs=4)
    for name, expected in KGNLP_BUDGETS.items():
        assert mix.target_tokens[name] == pytest.approx(expected, rel=1e-10)
    assert mix.binding == {"swe": "budget_share", "fas": "budget_share", "ekk": "budget_share",
                           "isl": "epoch_cap", "fao": "epoch_cap"}
    assert mix.epochs["fao"] == pytest.approx(4.0) and mix.epochs["isl"] == pytest.approx(4.0)


def test_unimax_descending_sort_counterexample():
    # DataMixer sorts descending and gives the small corpus 9.1% (1.36 epochs at N = 1).
    mix = solve({"small": 100, "a": 1000, "b": 1000}, 1500, "unimax", max_epochs=1)
    assert weights_of(mix) == pytest.approx([1 / 15, 7 / 15, 7 / 15], abs=1e-12)
    assert mix.epochs["small"] == pytest.approx(1.0)
    descending = np.array([500.0, 500.0, 100.0])  # what a descending loop hands out
    assert (descending / descending.sum())[2] * 1500 / 100 > 1.3  # the bug this test guards


def test_dolma_table_anchors():
    names = list(DOLMA_TOKENS)
    prop = solve(DOLMA_TOKENS, 100e9, "proportional")
    assert weights_of(prop) == pytest.approx(DOLMA_PROPORTIONAL, abs=6e-5)
    uni = solve(DOLMA_TOKENS, 2316e9, "unimax", max_epochs=4)
    assert weights_of(uni) == pytest.approx(DOLMA_UNIMAX_2316B, abs=6e-5)
    assert [uni.binding[n] for n in names[:4]] == ["budget_share"] * 4
    assert all(uni.binding[n] == "epoch_cap" for n in names[4:])
    assert weights_of(solve(DOLMA_TOKENS, 100e9, "unimax", max_epochs=4)) == pytest.approx([1 / 15] * 15)
    temp = solve(DOLMA_TOKENS, 100e9, "temperature", tau=3.33)
    assert temp.weights["cc"] == pytest.approx(.167, abs=5e-4)
    assert temp.weights["wiki"] == pytest.approx(.030, abs=6e-4)


def test_plain_form_from_the_brief():
    mix = solve({"web": 1_000_000, "code": 50_000}, budget_tokens=2_000_000, method="unimax", max_epochs=4)
    assert dict(mix.weights) == pytest.approx({"web": 0.9, "code": 0.1})
    assert dict(mix.epochs) == pytest.approx({"web": 1.8, "code": 4.0})
    assert mix.method == "unimax" and mix.solver == "closed_form" and mix.status == "optimal"
    assert mix.params["max_epochs"] == 4.0


# --- brute-force references ----------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(25))
def test_unimax_matches_water_filling_reference(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 40))
    sizes = 10 ** rng.uniform(3, 11, size=k)
    cap = float(rng.choice([1, 2, 4, 8]))
    budget = float(rng.uniform(0.001, 1.0) * cap * sizes.sum())
    got = unimax_token_budgets(sizes, budget, cap)
    assert got == pytest.approx(water_fill_unimax_reference(sizes, budget, cap), rel=1e-9)
    assert got.sum() == pytest.approx(budget, rel=1e-12)


@pytest.mark.parametrize("seed", range(25))
def test_water_fill_matches_bisection(seed):
    rng = np.random.default_rng(100 + seed)
    k = int(rng.integers(1, 30))
    pref = rng.dirichlet(np.ones(k))
    caps = rng.uniform(0.0, 1.0, size=k)
    caps *= rng.uniform(1.0, 3.0) / caps.sum()  # feasible: sum(caps) >= 1
    lo, hi = 0.0, 1e6
    for _ in range(300):
        t = 0.5 * (lo + hi)
        lo, hi = (t, hi) if np.minimum(caps, t * pref).sum() < 1 else (lo, t)
    assert water_fill(pref, caps) == pytest.approx(np.minimum(caps, 0.5 * (lo + hi) * pref), abs=1e-12)


def test_temperature_limits():
    sizes = np.array([1e9, 1e7, 1e5])
    assert temperature_weights(sizes, 1.0) == pytest.approx(sizes / sizes.sum())
    assert temperature_weights(sizes, 1e9) == pytest.approx([1 / 3] * 3, abs=1e-6)
    assert np.all(np.isfinite(temperature_weights(np.array([1e300, 1.0]), 0.01)))


def test_temperature_cap_redistributes_excess_proportionally():
    sizes = {"big": 1e9, "mid": 1e8, "small": 1e6}
    free = solve(sizes, 2e8, "temperature", tau=5.0)
    capped = solve(sizes, 2e8, "temperature", tau=5.0, max_epochs=2)
    assert free.epochs["small"] > 2
    assert capped.epochs["small"] == pytest.approx(2.0) and capped.binding["small"] == "epoch_cap"
    ratio_free = free.weights["big"] / free.weights["mid"]
    assert capped.weights["big"] / capped.weights["mid"] == pytest.approx(ratio_free)
    assert capped.binding["big"] == capped.binding["mid"] == "none"


def test_project_onto_capped_simplex_is_a_projection():
    rng = np.random.default_rng(0)
    for _ in range(20):
        v = rng.normal(0.3, 0.3, 6)
        caps = rng.uniform(0.1, 0.6, 6)
        w = project_onto_capped_simplex(v, caps)
        assert w.sum() == pytest.approx(1.0) and np.all(w >= 0) and np.all(w <= caps)
        for _ in range(50):  # no random feasible point is closer to v
            z = project_onto_capped_simplex(w + rng.normal(0, 0.05, 6), caps)
            assert np.linalg.norm(v - w) <= np.linalg.norm(v - z) + 1e-9


# --- other methods --------------------------------------------------------------------------------

def test_uniform_manual_proportional_and_result_shape():
    sources = {"a": 100.0, "b": 300.0}
    assert weights_of(solve(sources, 50, "uniform")) == pytest.approx([.5, .5])
    assert weights_of(solve(sources, 50, "proportional")) == pytest.approx([.25, .75])
    mix = solve(sources, 400, "manual", weights={"a": 2, "b": 6})
    assert weights_of(mix) == pytest.approx([.25, .75])
    assert mix.params["weights"] == {"a": .25, "b": .75}
    assert dict(mix.target_tokens) == pytest.approx({"a": 100, "b": 300})
    assert dict(mix.epochs) == pytest.approx({"a": 1, "b": 1})
    assert mix.max_epochs == {"a": None, "b": None}
    zero = solve(sources, 50, "manual", weights={"a": 0, "b": 1})
    assert zero.binding["a"] == "nonneg"


def test_sources_accept_records_dicts_and_objects():
    mix = solve({"a": SourceSize(100, n_docs=3, paths=("x",)), "b": {"n_tokens": 300, "n_docs": 2},
                 "c": np.int64(600)}, 100, "proportional")
    assert weights_of(mix) == pytest.approx([.1, .3, .6])
    assert mix.n_docs == {"a": 3, "b": 2, "c": None} and mix.paths["a"] == ("x",)


def test_method_aliases_and_registry():
    assert set(METHODS) == {"proportional", "temperature", "uniform", "manual", "unimax",
                            "utilimax", "weakest_link", "doremi", "regmix"}
    assert solve({"a": 1.0}, 1, "UniMax").method == "unimax"


def test_mixture_is_frozen():
    mix = solve({"a": 1.0, "b": 2.0}, 1, "uniform")
    with pytest.raises(dataclasses.FrozenInstanceError):
        mix.method = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        mix.weights["a"] = 1.0  # type: ignore[index]


def test_per_source_max_epochs():
    mix = solve({"a": 100, "b": 100}, 300, "unimax", max_epochs={"a": 1, "b": None})
    assert dict(mix.epochs) == pytest.approx({"a": 1.0, "b": 2.0})
    assert mix.max_epochs == {"a": 1.0, "b": None}
    assert mix.binding == {"a": "epoch_cap", "b": "budget_share"}


def test_default_cap_is_logged(caplog):
    with caplog.at_level("INFO", logger="mixweave.mixers"):
        mix = solve({"a": 100, "b": 10}, 100, "unimax")
    assert mix.max_epochs == {"a": 4.0, "b": 4.0}
    assert "max_epochs not set, using 4" in caplog.text


# --- budgets ---------------------------------------------------------------------------------------

def test_compute_and_data_constrained_budgets():
    sizes = {"web": 1e9, "code": 1e8, "wiki": 1e7}
    small = solve(sizes, 1e7, "unimax", max_epochs=4)  # compute-constrained: uniform
    assert weights_of(small) == pytest.approx([1 / 3] * 3)
    full = solve(sizes, 4 * 1.11e9, "unimax", max_epochs=4)  # exactly the capacity
    assert all(b == "epoch_cap" for b in full.binding.values())
    assert list(full.epochs.values()) == pytest.approx([4.0] * 3)


def test_infeasible_budget_names_sources_and_largest_budget():
    with pytest.raises(InfeasibleError) as err:
        solve({"web": 1_000_000, "code": 50_000}, 5_000_000, "unimax", max_epochs=4)
    msg = str(err.value)
    assert "web" in msg and "code" in msg and "4,200,000" in msg
    assert "raise max_epochs to at least 4.762" in msg
    for method, extra in [("temperature", {"tau": 2}), ("proportional", {})]:
        with pytest.raises(InfeasibleError, match="4,200,000"):
            solve({"web": 1_000_000, "code": 50_000}, 5_000_000, method, max_epochs=4, **extra)


def test_fixed_weight_methods_report_their_own_largest_budget():
    with pytest.raises(InfeasibleError) as err:
        solve({"web": 1_000_000, "code": 50_000}, 1_000_000, "uniform", max_epochs=4)
    assert "code" in str(err.value) and "web (" not in str(err.value)
    assert "400,000" in str(err.value) and "unimax" in str(err.value)  # 2 sources x 4 x 50k
    with pytest.raises(InfeasibleError, match=r"a \(2 > 1 epochs\).*at most 50 tokens"):
        solve({"a": 10, "b": 1000}, 100, "manual", weights={"a": .2, "b": .8}, max_epochs=1)


@pytest.mark.parametrize("sources, match", [
    ({}, "no sources"),
    ({"a": 0, "b": 10}, "sources a have 0 tokens.*remove them"),
    ({"a": -1}, "negative"),
    ({"a": float("nan"), "b": 1}, "a are NaN"),
    ({"a": float("inf")}, "NaN or infinite"),
    ({"a": "10"}, "source 'a': expected a token count.*got str"),
    ({"a": True}, "got bool"),
    ({"a": {"n_tokens": "10"}}, "token counts of sources a are not numbers"),
    ({"a": {"n_docs": 3}}, "no 'n_tokens'"),
    ({"a": {"n_tokens": 3, "n_docs": -1}}, "n_docs"),
    ([("a", 1)], "mapping"),
])
def test_bad_sources_raise_input_error(sources, match):
    with pytest.raises(InputError, match=match):
        solve(sources, 100, "proportional")


@pytest.mark.parametrize("budget", [0, -5, float("nan"), float("inf"), "1e9", None, True])
def test_bad_budget_raises_config_error(budget):
    with pytest.raises(ConfigError, match="budget_tokens"):
        solve({"a": 1}, budget, "proportional")


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "bogus"}, "unknown mixing method 'bogus'.*unimax"),
    ({"method": "unimax", "tau": 2}, "does not take tau"),
    ({"method": "temperature"}, "needs tau"),
    ({"method": "temperature", "tau": 0}, "tau must be"),
    ({"method": "temperature", "tau": float("nan")}, "tau must be"),
    ({"method": "manual"}, "needs weights"),
    ({"method": "manual", "weights": {"a": 1}}, "no weight to sources b"),
    ({"method": "manual", "weights": {"a": 1, "b": 1, "z": 1}}, "unknown sources z"),
    ({"method": "manual", "weights": {"a": -1, "b": 1}}, "a=-1"),
    ({"method": "manual", "weights": {"a": float("nan"), "b": 1}}, "a=nan"),
    ({"method": "manual", "weights": {"a": 0, "b": 0}}, "all zero"),
    ({"method": "unimax", "max_epochs": 0}, "max_epochs must be"),
    ({"method": "unimax", "max_epochs": {"a": 2}}, "no cap for sources b"),
    ({"method": "unimax", "max_epochs": {"a": 2, "b": 2, "q": 1}}, "unknown sources q"),
])
def test_bad_parameters_raise_config_error(kwargs, match):
    kwargs = dict(kwargs)
    method = kwargs.pop("method")
    with pytest.raises(ConfigError, match=match):
        solve({"a": 100, "b": 100}, 10, method, **kwargs)


# --- mix_from_stats ----------------------------------------------------------------------------------

def make_stats(**sizes: int) -> dict:
    return {"schema_version": 1, "tokenizer": {},
            "sources": {n: {"n_docs": max(1, t // 100), "n_tokens": t, "n_bytes": 4 * t,
                            "paths": [f"data/{n}/*.jsonl"], "length_histogram": {}}
                        for n, t in sizes.items()}}


def test_mix_from_stats(caplog):
    stats = make_stats(web=1_000_000, code=50_000)
    mix = mix_from_stats(stats, method="unimax", budget_tokens=2e6, max_epochs=4)
    assert dict(mix.weights) == pytest.approx({"web": .9, "code": .1})
    assert mix.n_docs == {"web": 10_000, "code": 500} and mix.paths["code"] == ("data/code/*.jsonl",)
    utility = {"web": {"b": 1.0}, "code": {"b": 2.0}}
    with caplog.at_level("INFO", logger="mixweave.mixers"):
        mix_from_stats(stats, method="uniform", budget_tokens=1e5, max_epochs=None, utility=utility)
    assert "does not use utility" in caplog.text
    util = mix_from_stats(stats, method="utilimax", budget_tokens=1e5, max_epochs=4, utility=utility)
    assert util.utility["code"] == {"b": 2.0}


@pytest.mark.parametrize("stats, match", [
    ({"sources": {"a": {"n_tokens": 1}}}, "schema_version"),
    ({"schema_version": 1}, "no 'sources'"),
    ({"schema_version": 1, "sources": {"a": {"n_docs": 1}}}, "sources.a has no n_tokens"),
    ([], "stats.json object"),
])
def test_mix_from_stats_rejects_bad_stats(stats, match):
    with pytest.raises(InputError, match=match):
        mix_from_stats(stats, method="unimax", budget_tokens=1, max_epochs=4)


def test_package_import_is_light():
    code = ("import sys, mixweave.mixers; "
            "print(sorted(m for m in ('cvxpy', 'matplotlib', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_feasibility_boundary_is_inclusive():
    mix = solve({"a": 10, "b": 30}, 160, "unimax", max_epochs=4)
    assert math.isclose(sum(mix.weights.values()), 1.0)
    with pytest.raises(InfeasibleError, match="at most 160"):
        solve({"a": 10, "b": 30}, 161, "unimax", max_epochs=4)
