"""UtiliMax and weakest-link (cvxpy) against brute force and UniMax; utility tables and readers."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from mixweave.data.utility_table import UtilityTable, coerce_utility, read_utility_table
from mixweave.errors import ConfigError, InputError
from mixweave.mixers import solve
from mixweave.mixers.utility_math import normalize_utility
from mixweave.mixers.utilimax import utilimax_objective, utilimax_weights
from mixweave.mixers.weakest_link import weakest_link_objective, weakest_link_weights

DOLMA_TOKENS = {k: v * 1e9 for k, v in {
    "cc": 1195.5, "falcon": 456.4, "starcoder": 263.8, "c4": 138.4, "reddit": 79.9, "pes2o": 57.2,
    "arxiv": 28.0, "stackexchange": 19.6, "flan": 16.5, "ccnews": 14.3, "openwebmath": 12.6,
    "algebraic": 12.6, "books": 5.3, "megawika": 4.6, "wiki": 3.7}.items()}

SIZES = {"web": 1e9, "code": 1e8, "wiki": 1e7}
UTILITY = {"web": {"arc": 0.40, "mbpp": 0.05, "nq": 0.30},
           "code": {"arc": 0.20, "mbpp": 0.35, "nq": 0.10},
           "wiki": {"arc": 0.35, "mbpp": 0.02, "nq": 0.45}}


def simplex_grid(step: int) -> np.ndarray:
    """All 3-source weight vectors on a grid of 1/step."""
    pts = [(i, j, step - i - j) for i in range(step + 1) for j in range(step + 1 - i)]
    return np.array(pts, dtype=float) / step


def values(mapping) -> np.ndarray:
    return np.array(list(mapping.values()))


# --- UniMax is the uniform-utility special case ---------------------------------------------------

@pytest.mark.parametrize("budget", [100e9, 2316e9])
@pytest.mark.parametrize("method, extra", [("utilimax", {}), ("utilimax", {"squared": True}),
                                           ("weakest_link", {})])
def test_uniform_utility_reduces_to_unimax(budget, method, extra):
    flat = {s: {"a": 0.5, "b": 0.5} for s in DOLMA_TOKENS}
    got = solve(DOLMA_TOKENS, budget, method, max_epochs=4, utility=flat, **extra)
    want = solve(DOLMA_TOKENS, budget, "unimax", max_epochs=4)
    assert values(got.weights) == pytest.approx(values(want.weights), abs=1e-6)
    assert got.solver == "CLARABEL" and got.status == "optimal"


# --- brute force on 3 sources -------------------------------------------------------------------------

def random_instance(seed: int):
    rng = np.random.default_rng(seed)
    utility = rng.uniform(0, 1, size=(3, 4))
    utility, _ = normalize_utility(utility, "minmax")
    caps = rng.uniform(0.15, 0.9, size=3)
    caps *= max(1.0, rng.uniform(1.05, 2.0) / caps.sum())
    risk = rng.uniform(0.2, 2.0, size=3)
    lam = float(rng.choice([0.0, 0.1, 1.0, 3.0]))
    return utility, caps, risk, lam


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("squared", [False, True])
def test_utilimax_no_worse_than_grid_or_scipy(seed, squared):
    utility, caps, risk, lam = random_instance(seed)
    result = utilimax_weights(utility, caps, risk, lam, squared)
    w = result.weights
    assert w.sum() == pytest.approx(1.0) and np.all(w >= 0) and np.all(w <= caps)
    best = utilimax_objective(w, utility, risk, lam, squared)
    grid = simplex_grid(300)
    grid = grid[np.all(grid <= caps, axis=1)]
    grid_values = [utilimax_objective(g, utility, risk, lam, squared) for g in grid]
    assert best <= min(grid_values) + 1e-7
    cons = [{"type": "eq", "fun": lambda x: x.sum() - 1}]
    for start in itertools.islice(grid[:: max(1, len(grid) // 5)], 5):
        res = minimize(utilimax_objective, start, args=(utility, risk, lam, squared), method="SLSQP",
                       bounds=list(zip([0] * 3, caps)), constraints=cons, options={"ftol": 1e-12})
        if res.success:
            assert best <= res.fun + 1e-6


@pytest.mark.parametrize("seed", range(8))
def test_weakest_link_no_worse_than_grid(seed):
    utility, caps, risk, lam = random_instance(50 + seed)
    w = weakest_link_weights(utility, caps, risk, lam).weights
    assert w.sum() == pytest.approx(1.0) and np.all(w >= 0) and np.all(w <= caps)
    best = weakest_link_objective(w, utility, risk, lam)
    grid = simplex_grid(300)
    grid = grid[np.all(grid <= caps, axis=1)]
    assert best >= max(weakest_link_objective(g, utility, risk, lam) for g in grid) - 1e-7


def test_utilimax_prefers_useful_sources_and_respects_caps():
    mix = solve(SIZES, 5e8, "utilimax", max_epochs=4, utility=UTILITY, lam=0.1)
    assert mix.epochs["wiki"] == pytest.approx(4.0) and mix.binding["wiki"] == "epoch_cap"
    assert all(mix.epochs[s] <= 4.0 for s in SIZES)
    assert mix.params["lam"] == 0.1 and mix.params["squared"] is False
    assert mix.params["benchmarks"] == ["arc", "mbpp", "nq"]
    assert mix.objective == pytest.approx(
        utilimax_objective(values(mix.weights), normalize_utility(
            np.array([list(r.values()) for r in UTILITY.values()]), "minmax")[0],
            np.ones(3), 0.1, False))


def test_zero_weight_sources_are_marked_nonneg():
    utility = {"good": {"x": 1.0}, "bad": {"x": 0.0}, "ok": {"x": 0.9}}
    mix = solve({"good": 1e9, "bad": 1e9, "ok": 1e9}, 1e8, "utilimax", utility=utility, lam=0.0)
    assert mix.binding["bad"] == "nonneg" and mix.weights["bad"] == 0.0


def test_lam_n_and_risk_diagonal_and_logged_defaults(caplog):
    std = {s: {b: 0.01 * (i + 1) for b in row} for i, (s, row) in enumerate(UTILITY.items())}
    with caplog.at_level("INFO", logger="mixweave.mixers"):
        mix = solve(SIZES, 1e8, "utilimax", utility=UTILITY, utility_std=std)
    assert mix.params["risk"] == "diagonal" and mix.params["lam"] == 1.0
    for text in ("lam not set", "risk not set", "normalize not set", "squared not set"):
        assert text in caplog.text
    assert solve(SIZES, 1e8, "utilimax", utility=UTILITY, lam="n").params["lam"] == 3.0


def test_repeated_solve_gives_the_same_answer():
    first = solve(SIZES, 3e8, "utilimax", utility=UTILITY, lam=0.5)
    solve(SIZES, 1e8, "utilimax", utility=UTILITY, lam=2.0)  # same shape, other parameters
    again = solve(SIZES, 3e8, "utilimax", utility=UTILITY, lam=0.5)
    assert values(again.weights) == pytest.approx(values(first.weights), abs=1e-9)


@pytest.mark.parametrize("kwargs, error, match", [
    ({}, ConfigError, "needs a utility table"),
    ({"utility": {"web": {"a": 1}, "code": {"a": 1}}}, InputError, "no scores for sources wiki"),
    ({"utility": {"web": {"a": 1, "b": 2}, "code": {"a": 1}, "wiki": {"a": 1, "b": 1}}},
     InputError, "missing source/benchmark cells code/b"),
    ({"utility": {"web": {"a": float("nan")}, "code": {"a": 1}, "wiki": {"a": 1}}},
     InputError, "NaN or infinite for web/a"),
    ({"utility": UTILITY, "utility_std": {s: {b: -1 for b in r} for s, r in UTILITY.items()}},
     InputError, "std is negative"),
    ({"utility": UTILITY, "risk": "diagonal"}, ConfigError, "needs utility standard deviations"),
    ({"utility": UTILITY, "lam": -1}, ConfigError, "lam must be"),
    ({"utility": UTILITY, "squared": "yes"}, ConfigError, "squared must be"),
    ({"utility": UTILITY, "normalize": "zscore"}, ConfigError, "normalize must be one of"),
    ({"utility": UTILITY, "solver": "NOPE"}, ConfigError, "solver 'NOPE' is not installed"),
    ({"utility": [1, 2]}, InputError, "must be a DataFrame"),
])
def test_utilimax_input_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        solve(SIZES, 1e8, "utilimax", **kwargs)


def test_extra_utility_sources_are_ignored_with_a_warning(caplog):
    utility = {**UTILITY, "unused": {"arc": 1, "mbpp": 1, "nq": 1}}
    with caplog.at_level("WARNING", logger="mixweave.data.utility_table"):
        mix = solve(SIZES, 1e8, "weakest-link", utility=utility)
    assert "unused" in caplog.text and "unused" not in mix.weights


# --- utility tables -------------------------------------------------------------------------------------

def long_frame() -> pd.DataFrame:
    rows = [{"source": s, "benchmark": b, "score": v, "std": 0.01} for s, r in UTILITY.items()
            for b, v in r.items()]
    return pd.DataFrame(rows)


def test_wide_long_and_mapping_forms_agree(tmp_path):
    from_mapping = coerce_utility(UTILITY)
    wide = pd.DataFrame(UTILITY).T
    for table in (coerce_utility(wide), coerce_utility(long_frame()),
                  coerce_utility(long_frame().rename(columns={"score": "mean"}))):
        aligned = table.aligned(from_mapping.sources)
        assert aligned.benchmarks == from_mapping.benchmarks
        assert np.array_equal(aligned.scores, from_mapping.scores)
    assert coerce_utility(long_frame()).std is not None


def test_read_utility_table_formats(tmp_path):
    long_frame().to_parquet(tmp_path / "u.parquet")
    long_frame().to_csv(tmp_path / "u.csv", index=False)
    pd.DataFrame(UTILITY).T.rename_axis("source").reset_index().to_csv(tmp_path / "wide.csv", index=False)
    pd.DataFrame(UTILITY).T.to_parquet(tmp_path / "wide.parquet")
    pd.DataFrame(UTILITY).T.to_csv(tmp_path / "wide_noname.csv")
    reference = coerce_utility(UTILITY)
    for name in ("u.parquet", "u.csv", "wide.csv", "wide.parquet", "wide_noname.csv"):
        table = read_utility_table(tmp_path / name)
        assert isinstance(table, UtilityTable)
        assert table.aligned(reference.sources).as_dict() == reference.as_dict(), name
    mix = solve(SIZES, 1e8, "utilimax", utility=read_utility_table(tmp_path / "u.parquet"))
    assert mix.params["risk"] == "diagonal"


def test_read_utility_table_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_utility_table(tmp_path / "missing.csv")
    (tmp_path / "u.txt").write_text("x")
    with pytest.raises(InputError, match="unknown format"):
        read_utility_table(tmp_path / "u.txt")
    dup = pd.concat([long_frame(), long_frame().iloc[:1]])
    dup.to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(InputError, match="duplicate rows for web/arc"):
        read_utility_table(tmp_path / "dup.csv")
    long_frame().drop(columns="score").to_csv(tmp_path / "noscore.csv", index=False)
    with pytest.raises(InputError, match="needs a 'score'"):
        read_utility_table(tmp_path / "noscore.csv")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="cannot be read"):
        read_utility_table(tmp_path / "bad.parquet")
    holes = long_frame().iloc[1:]
    holes.to_csv(tmp_path / "holes.csv", index=False)
    with pytest.raises(InputError, match="web/arc"):
        read_utility_table(tmp_path / "holes.csv")


def test_normalize_utility():
    scores = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0]])
    minmax, scale = normalize_utility(scores, "minmax")
    assert minmax.tolist() == [[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]] and scale.tolist() == [2.0, 1.0, 2.0]
    assert normalize_utility(scores, "max")[0][0].tolist() == pytest.approx([1 / 3, 1.0, 0.5])
    with pytest.raises(InputError, match="minmax"):
        normalize_utility(-scores, "max")


def test_concurrent_solves_agree_with_serial_ones():
    """Programs are built per call (no shared cvxpy state), so threads need no lock."""
    from concurrent.futures import ThreadPoolExecutor

    lams = [0.1, 0.5, 1.0, 2.0] * 3
    serial = [values(solve(SIZES, 3e8, "utilimax", utility=UTILITY, lam=lam).weights) for lam in lams]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(
            lambda lam: values(solve(SIZES, 3e8, "utilimax", utility=UTILITY, lam=lam).weights), lams))
    for got, want in zip(threaded, serial):
        assert got == pytest.approx(want, abs=1e-9)
