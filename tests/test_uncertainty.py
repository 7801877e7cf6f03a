"""Utility uncertainty: the standard error of each mean beside the per-document std (brute force),
in the normalised units of the value, read from old tables, used as UtiliMax's / weakest-link's
default risk (against the program written out by hand in cvxpy), and shown in the report."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mixweave.data.utility_table import coerce_utility, read_utility_table
from mixweave.errors import ConfigError
from mixweave.mixers import solve
from mixweave.mixers.utility_math import normalize_table_units, normalize_utility, risk_diagonal
from mixweave.utility.aggregate import aggregate_scores, normalize_table, standard_error

SOURCES = ("web", "code", "wiki")
BENCHMARKS = ("arc", "mbpp", "nq")


def brute_se(values) -> float:
    """sqrt(sum (x - mean)^2 / (n - 1) / n), one term at a time."""
    n = len(values)
    mean = sum(values) / n
    return math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1) / n)


def score_rows(seed: int = 0, sizes=None):
    """Per-document scores 1..5 per (source, benchmark), different sizes and levels per cell."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, s in enumerate(SOURCES):
        for j, b in enumerate(BENCHMARKS):
            n = (sizes or {}).get((s, b), 6 + 5 * i + 3 * j)
            p = np.roll([0.1, 0.2, 0.3, 0.25, 0.15], i + 2 * j)
            rows += [{"source": s, "benchmark": b, "score": float(x)} for x in rng.choice([1, 2, 3, 4, 5], n, p=p)]
    return rows


# -- the standard error ---------------------------------------------------------------------------------
def test_se_matches_brute_force():
    rows = score_rows(sizes={("web", "arc"): 1})
    table = aggregate_scores(rows, n_boot=200, seed=1).to_pylist()
    for r in table:
        values = [x["score"] for x in rows if (x["source"], x["benchmark"]) == (r["source"], r["benchmark"])]
        assert r["n"] == len(values)
        if len(values) == 1:
            assert r["se"] == 0.0 and r["std"] == 0.0
        else:
            assert r["se"] == pytest.approx(brute_se(values), rel=1e-12)
            assert r["se"] == pytest.approx(r["std"] / math.sqrt(r["n"]), rel=1e-12)
            assert r["se"] < r["std"]  # the mean is surer than one document
    assert math.isnan(standard_error(np.array([])))


@pytest.mark.parametrize("how", ["minmax", "max", "zscore"])
def test_normalised_se_scales_like_the_scores(how):
    raw = aggregate_scores(score_rows(), n_boot=200)
    normed, per_bench = normalize_table(raw, how)
    for a, b in zip(raw.to_pylist(), normed.to_pylist()):
        p = per_bench[a["benchmark"]]
        assert b["mean"] == pytest.approx((a["mean"] - p["offset"]) / p["scale"])
        assert b["ci_high"] == pytest.approx((a["ci_high"] - p["offset"]) / p["scale"])
        assert b["se"] == pytest.approx(a["se"] / p["scale"]) and b["std"] == pytest.approx(a["std"] / p["scale"])
    # a difference between two sources measured in standard errors does not depend on the units
    def t_stat(t):
        r = {(x["source"], x["benchmark"]): x for x in t.to_pylist()}
        a, b = r[("web", "arc")], r[("code", "arc")]
        return (a["mean"] - b["mean"]) / math.hypot(a["se"], b["se"])
    assert t_stat(normed) == pytest.approx(t_stat(raw))


@pytest.mark.parametrize("how", ["minmax", "max", "none"])
def test_mixer_units_match_the_score_normalisation(how):
    table = coerce_utility(aggregate_scores(score_rows(), n_boot=200).to_pandas())
    units, scale = normalize_table_units(table, how)
    normed, _ = normalize_utility(table.scores, how)
    np.testing.assert_allclose(units.scores, normed)
    np.testing.assert_allclose(units.se, table.se / scale)
    np.testing.assert_allclose(units.std, table.std / scale)
    # the interval maps like the scores: its ends keep their distance from the mean in scale units
    np.testing.assert_allclose(units.ci_high - units.scores, (table.ci_high - table.scores) / scale)
    if how == "minmax":
        assert np.allclose(units.scores.min(0), 0) and np.allclose(units.scores.max(0), 1)
    np.testing.assert_allclose(risk_diagonal(table, scale, "se"), ((table.se / scale) ** 2).mean(axis=1))


# -- old tables ----------------------------------------------------------------------------------------
def test_old_tables_without_se_read_fine(tmp_path, caplog):
    table = aggregate_scores(score_rows(), n_boot=200)
    pq.write_table(table, tmp_path / "new.parquet")
    pq.write_table(table.drop(["se"]), tmp_path / "old.parquet")
    pq.write_table(table.drop(["se", "n"]), tmp_path / "older.parquet")
    new = read_utility_table(tmp_path / "new.parquet")
    with caplog.at_level(logging.INFO, logger="mixweave.data.utility_table"):
        old = read_utility_table(tmp_path / "old.parquet")
    assert "using se = std / sqrt(n)" in caplog.text
    np.testing.assert_allclose(old.se, new.se)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mixweave.data.utility_table"):
        older = read_utility_table(tmp_path / "older.parquet")
    assert older.se is None and older.std is not None and "no 'se' column" in caplog.text
    np.testing.assert_array_equal(older.scores, new.scores)
    sizes = {s: 1e9 for s in SOURCES}
    assert solve(sizes, 1e8, "utilimax", utility=new).params["risk"] == "se"
    assert solve(sizes, 1e8, "utilimax", utility=older).params["risk"] == "diagonal"
    with pytest.raises(ConfigError, match="risk='se' needs the standard error"):
        solve(sizes, 1e8, "utilimax", utility=older, risk="se")
    # csv without se and n, as a user may write by hand: se absent, scores fine
    pd.DataFrame([{"source": s, "benchmark": b, "score": 0.5 + 0.1 * i} for i, s in enumerate(SOURCES)
                  for b in BENCHMARKS]).to_csv(tmp_path / "plain.csv", index=False)
    plain = read_utility_table(tmp_path / "plain.csv")
    assert plain.se is None and plain.std is None and plain.interval() is None
    # a table handed over in code with an unknown se is refused, naming the cell
    from dataclasses import replace

    from mixweave.errors import InputError

    holes = new.se.copy()
    holes[1, 2] = np.nan
    with pytest.raises(InputError, match=f"se is missing, NaN or infinite for {new.sources[1]}/{new.benchmarks[2]}"):
        coerce_utility(replace(new, se=holes))


def test_table_method_keeps_the_interval_of_the_mean(tmp_path):
    """``utility --method table`` keeps se and the interval; a table with a std only gets NaN se and
    interval (unknown), which reads back as absent, never as +-1.96 std."""
    from mixweave.utility.api import table_result

    table = aggregate_scores(score_rows(), n_boot=200)
    pq.write_table(table, tmp_path / "t.parquet")
    again = table_result(tmp_path / "t.parquet").table
    assert again.column_names == table.column_names
    for col in ("mean", "std", "se", "ci_low", "ci_high", "n"):
        np.testing.assert_allclose(again.column(col).to_numpy(), table.column(col).to_numpy())
    pq.write_table(table.drop(["se", "n", "ci_low", "ci_high"]), tmp_path / "std_only.parquet")
    bare = table_result(tmp_path / "std_only.parquet").table
    assert all(math.isnan(x) for x in bare.column("se").to_pylist() + bare.column("ci_low").to_pylist())
    pq.write_table(bare, tmp_path / "bare.parquet")
    back = read_utility_table(tmp_path / "bare.parquet")
    assert back.se is None and back.ci_low is None and back.std is not None


def test_ablation_table_carries_its_own_se(tmp_path):
    """The ablation estimator writes se itself (over seeds, or over examples with one seed), so the
    reader does not derive a wrong one from std and the number of examples."""
    from mixweave.utility.ablation import AblationResult

    idx = pd.Index(["books", "code"], name="source")
    scores = pd.DataFrame([[-2.0, -3.0], [-2.5, -1.0]], index=idx, columns=["arc", "mbpp"])
    se = pd.DataFrame([[0.1, 0.2], [0.3, 0.05]], index=idx, columns=["arc", "mbpp"])
    result = AblationResult(scores=scores, std=se * np.sqrt(50), losses=-scores, n_examples={"arc": 50, "mbpp": 50},
                            se=se * 3)  # an se that is not std / sqrt(n): the written one must win
    result.long().to_parquet(tmp_path / "utility.parquet", index=False)
    table = read_utility_table(tmp_path / "utility.parquet")
    np.testing.assert_allclose(table.se, (se * 3).to_numpy())
    np.testing.assert_allclose(table.std, (se * np.sqrt(50)).to_numpy())


# -- UtiliMax / weakest-link with risk = se against the program written out by hand ------------------------
def hand_instance():
    table = coerce_utility(aggregate_scores(score_rows(3), n_boot=200).to_pandas())
    sizes = {"web": 3e8, "code": 6e7, "wiki": 2e7}
    return table, sizes, 2e8, 4.0


def hand_program(table, sizes, budget, max_epochs, lam, kind):
    """The program solved with cvxpy from first principles: per-benchmark min-max by loops,
    Sigma_ii = mean_j (se_ij / (max_j - min_j))^2, caps w_i <= E n_i / B."""
    import cvxpy as cp

    k, m = table.scores.shape
    names = list(table.sources)
    U = np.zeros((k, m))
    sigma = np.zeros(k)
    for j in range(m):
        col = [table.scores[i, j] for i in range(k)]
        lo, hi = min(col), max(col)
        for i in range(k):
            U[i, j] = (col[i] - lo) / (hi - lo)
            sigma[i] += (table.se[i, j] / (hi - lo)) ** 2 / m
    caps = np.array([max_epochs * sizes[n] / budget for n in names])
    w = cp.Variable(k)
    cons = [w >= 0, cp.sum(w) == 1, w <= caps]
    risk = lam * cp.sum(cp.multiply(sigma, cp.square(w)))
    if kind == "utilimax":
        problem = cp.Problem(cp.Minimize(cp.norm(U.T @ w - 1, 2) + risk), cons)
    else:
        t = cp.Variable()
        problem = cp.Problem(cp.Maximize(t - risk), cons + [U.T @ w >= t])
    problem.solve(solver="CLARABEL")
    return np.asarray(w.value), float(problem.value), sigma


@pytest.mark.parametrize("method", ["utilimax", "weakest_link"])
@pytest.mark.parametrize("lam", [1.0, 25.0])
def test_risk_se_equals_the_program_by_hand(method, lam):
    table, sizes, budget, max_epochs = hand_instance()
    mix = solve(sizes, budget, method, max_epochs=max_epochs, utility=table, lam=lam)
    assert mix.params["risk"] == "se" and "risk" in mix.params["defaulted"]  # the default, recorded as such
    want, objective, sigma = hand_program(table.aligned(list(sizes)), sizes, budget, max_epochs, lam, method)
    got = np.array([mix.weights[n] for n in sizes])
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert mix.objective == pytest.approx(objective, abs=1e-5)
    assert [mix.params["risk_diagonal"][n] for n in sizes] == pytest.approx(sigma.tolist(), rel=1e-9)
    # the per-document variance is a different (larger) risk and, with a heavy lam, another mixture
    other = solve(sizes, budget, method, max_epochs=max_epochs, utility=table, lam=lam, risk="diagonal")
    assert all(other.params["risk_diagonal"][n] > mix.params["risk_diagonal"][n] for n in sizes)
    if lam == 25.0:
        assert np.abs(np.array([other.weights[n] for n in sizes]) - got).max() > 1e-3


def test_run_config_takes_risk_se():
    from mixweave.mixers.config import MixConfig

    assert MixConfig(method="utilimax", params={"risk": "se", "lam": 0.5}).solver_params() == {"risk": "se", "lam": 0.5}
    with pytest.raises(ConfigError, match="risk"):
        MixConfig(method="weakest-link", params={"risk": "stderr"})


def test_explicit_settings_are_not_marked_defaulted():
    table, sizes, budget, max_epochs = hand_instance()
    mix = solve(sizes, budget, "utilimax", max_epochs=max_epochs, utility=table, lam=0.5, risk="identity",
                normalize="max", squared=True)
    assert mix.params["defaulted"] == [] and mix.params["lam"] == 0.5 and mix.params["normalize"] == "max"
    assert set(mix.params["risk_diagonal"].values()) == {1.0}


# -- the report's flag ------------------------------------------------------------------------------------------
def test_within_noise_rule():
    from mixweave.pipeline.report import within_noise

    means = np.array([[0.9, 0.5], [0.6, 0.7], [0.1, 0.2]])
    tight = np.full_like(means, 0.05)
    wide = np.full_like(means, 0.4)
    w = np.array([0.6, 0.3, 0.1])
    # tight intervals: 0 beats 1 on benchmark 0 clearly; 1 beats 2 clearly everywhere
    assert within_noise(w, means, means - tight, means + tight) == [None, None, None]
    # wide intervals: every deciding benchmark overlaps -> all flagged, each against its neighbour
    assert within_noise(w, means, means - wide, means + wide) == [1, 2, 1]
    # source 0 gets more weight than 1 yet is no better anywhere: its weight does not rest on utility
    assert within_noise(np.array([0.6, 0.3, 0.1]), means[[2, 1, 0]], (means - wide)[[2, 1, 0]],
                        (means + wide)[[2, 1, 0]])[0] is None
    # equal weights are never flagged; zero weights tie within tol and compare with the source above
    assert within_noise(np.array([0.5, 0.5]), means[:2], means[:2] - wide[:2], means[:2] + wide[:2]) == [None, None]
    low = np.array([0.7, 0.3, 1e-9, 0.0])
    m4 = np.array([[0.9], [0.6], [0.58], [0.1]])
    assert within_noise(low, m4, m4 - 0.05, m4 + 0.05) == [None, 2, 1, None]
    # a level of several sources: flagged when the gap to any of them rests on overlapping intervals
    tied = np.array([[1.0], [0.1], [0.95]])
    assert within_noise(np.array([0.6, 0.0, 1e-9]), tied, tied - 0.1, tied + 0.1) == [2, None, 0]


def test_heatmap_caption_names_the_interval_it_shows():
    from dataclasses import replace

    from mixweave.pipeline.report import chart_utility, utility_interval_caption

    table = coerce_utility(aggregate_scores(score_rows(), n_boot=200).to_pandas())
    assert "percentile bootstrap" in utility_interval_caption(table, 0.9, 500)
    assert "90% confidence interval" in utility_interval_caption(table, 0.9, 500)
    se_only = replace(table, ci_low=None, ci_high=None)
    lo, hi, kind = se_only.interval()
    assert kind == "se" and np.allclose(hi - se_only.scores, 1.96 * se_only.se)
    assert "mean ± 1.96 × standard error" in utility_interval_caption(se_only)
    bare = replace(se_only, se=None)
    assert bare.interval() is None and "none is shown" in utility_interval_caption(bare)
    for t in (table, se_only, bare):
        assert chart_utility(t)[:8] == b"\x89PNG\r\n\x1a\n"


# -- the report on the shared full run ---------------------------------------------------------------------------
def test_full_run_records_and_reports_the_uncertainty(full_run):
    from mixweave.pipeline.report import build_report

    out = full_run.out
    table = read_utility_table(out / "utility" / "utility.parquet")
    assert table.se is not None and table.ci_low is not None  # the embedding estimator fills them
    assert np.all(table.se <= table.std + 1e-12)
    mixture = json.loads((out / "mix" / "mixture.json").read_text())
    params = mixture["method"]["params"]
    assert params["risk"] == "se" and params["lam"] == 1.0 and params["normalize"] == "minmax"
    assert {"lam", "risk", "normalize"} <= set(params["defaulted"])
    assert set(params["risk_diagonal"]) == {s["name"] for s in mixture["sources"]}
    text = build_report(out)
    assert "confidence interval of that mean (percentile bootstrap" in text
    assert "not the spread of single documents" in text and "half-interval" not in text
    why = text[text.index("<h3>Why each source got its weight</h3>"):text.index("<h2>Utility</h2>")]
    for s in mixture["sources"]:
        assert f"<td>{s['name']}</td>" in why
    for b in params["benchmarks"]:
        assert f"<th>{b}</th>" in why
    assert "λ·Σii·w²" in why and "sources flagged" in why
