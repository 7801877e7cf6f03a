"""Skill-aware validation sets (Compute-Optimal Scaling of Skills): default skill tags of the shipped
benchmarks, overrides (run config over records over defaults), UtiliMax and weakest-link with a
target skill composition against the programs written by hand in cvxpy, mixture.json's record of
the weights used, and the report's composition, per-skill utility and far-from-target warning."""

from __future__ import annotations

from pathlib import Path

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest

from mixweave.data.benchmarks import (DEFAULT_SKILLS, SKILLS, benchmark_skills, configured_skills,
                                      read_benchmark_records, record_skills, skill_composition,
                                      total_variation)
from mixweave.errors import ConfigError, InputError
from mixweave.mixers import solve

FIXTURE_BENCHMARKS = Path(__file__).parent / "data" / "corpus" / "benchmarks.jsonl"
TOKENIZER = {"name": "gpt2", "path": "gpt2", "sha256": "0" * 64, "vocab_size": 50257, "eos_id": 50256,
             "dtype": "uint16"}
# 3 sources x 3 benchmarks: two code benchmarks, one knowledge benchmark
SIZES = {"web": 1000.0, "code": 1500.0, "wiki": 800.0}
UTILITY = {"web": {"humaneval": 0.2, "mbpp": 0.3, "mmlu": 0.9},
           "code": {"humaneval": 0.9, "mbpp": 0.8, "mmlu": 0.1},
           "wiki": {"humaneval": 0.1, "mbpp": 0.2, "mmlu": 0.7}}
BENCH = ["humaneval", "mbpp", "mmlu"]
U = np.array([[UTILITY[s][b] for b in BENCH] for s in SIZES])
BUDGET, CAP, LAM = 3000.0, 3.0, 0.1


def test_default_tags_cover_the_shipped_and_fixture_benchmarks():
    from mixweave.corpus.benchmarks import BENCHMARKS

    assert set(DEFAULT_SKILLS) == set(BENCHMARKS) and set(DEFAULT_SKILLS.values()) <= set(SKILLS)
    names = sorted({r["benchmark"] for r in read_benchmark_records(FIXTURE_BENCHMARKS).records})
    assert benchmark_skills(names) == {"arc_challenge": "reasoning", "arc_easy": "reasoning", "gsm8k": "math",
                                       "humaneval": "code", "mbpp": "code", "mmlu": "knowledge"}
    assert skill_composition(benchmark_skills(names)) == pytest.approx(
        {"code": 2 / 6, "knowledge": 1 / 6, "math": 1 / 6, "reasoning": 2 / 6})
    assert benchmark_skills(["my_bench"]) == {"my_bench": None}
    assert skill_composition({"a": None, "b": "code"}) == {"code": 0.5, "untagged": 0.5}


def test_overrides_config_over_records_over_defaults(tmp_path):
    from mixweave.pipeline.config import parse_config

    records = [{"benchmark": "mmlu", "prompt": "p", "skill": "reasoning"},
               {"benchmark": "my_bench", "prompt": "p", "skill": "multilingual"},
               {"benchmark": "gsm8k", "prompt": "p"}]
    path = tmp_path / "b.jsonl"
    path.write_text("\n".join(__import__("json").dumps(r) for r in records) + "\n")
    assert record_skills(records) == {"mmlu": "reasoning", "my_bench": "multilingual"}
    tags = configured_skills({"my_bench": "code"}, path)
    assert tags == {"mmlu": "reasoning", "my_bench": "code"}
    assert benchmark_skills(["mmlu", "my_bench", "gsm8k"], tags) == {"mmlu": "reasoning", "my_bench": "code",
                                                                     "gsm8k": "math"}
    config = parse_config({"benchmark_skills": {"my_bench": "code"}})
    assert config.benchmark_skills == {"my_bench": "code"}
    with pytest.raises(ConfigError, match="benchmark_skills.my_bench: skill 'cooking'") as err:
        parse_config({"benchmark_skills": {"my_bench": "cooking"}})
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="two skills"):
        record_skills([{"benchmark": "x", "skill": "code"}, {"benchmark": "x", "skill": "math"}])


def _hand_utilimax(a: np.ndarray | None) -> np.ndarray:
    """UtiliMax written by hand: min sqrt(sum_j a_j (U^T w - 1)_j^2) + lam ||w||^2 under the caps."""
    w = cp.Variable(3, nonneg=True)
    gap = U.T @ w - 1
    fit = cp.norm(gap if a is None else cp.multiply(np.sqrt(a), gap), 2)
    caps = CAP * np.array(list(SIZES.values())) / BUDGET
    cp.Problem(cp.Minimize(fit + LAM * cp.sum_squares(w)), [cp.sum(w) == 1, w <= caps]).solve(solver="CLARABEL")
    return w.value


def _utilimax(**params) -> dict:
    mix = solve(SIZES, BUDGET, "utilimax", max_epochs=CAP, utility=UTILITY, lam=LAM, risk="identity",
                normalize="none", **params)
    return mix


def _same_optimum(mix, hand: np.ndarray, a: np.ndarray | None) -> None:
    """The solver's weights match the hand program's (interior-point tolerance on a flat optimum)
    and reach its objective."""
    from mixweave.mixers.utilimax import utilimax_objective

    got = np.array(list(mix.weights.values()))
    np.testing.assert_allclose(got, hand, atol=1e-4)
    ours, theirs = (utilimax_objective(x, U, np.ones(3), LAM, False, column_weights=a) for x in (got, hand))
    assert ours == pytest.approx(theirs, abs=1e-7) and mix.objective == pytest.approx(ours, abs=1e-9)


def test_reweighted_utilimax_equals_the_hand_written_program():
    target = {"code": 0.25, "knowledge": 0.75}
    mix = _utilimax(target_skills=target)
    a = np.array([3 * 0.25 / 2, 3 * 0.25 / 2, 3 * 0.75 / 1])  # a_j = m t_s / n_s
    np.testing.assert_allclose(list(mix.params["skill_weights"].values()), a)
    _same_optimum(mix, _hand_utilimax(a), a)
    plain = _utilimax()
    _same_optimum(plain, _hand_utilimax(None), None)
    assert "target_skills" not in plain.params and plain.params["benchmark_skills"]["mmlu"] == "knowledge"
    assert np.abs(np.array(list(mix.weights.values())) - list(plain.weights.values())).max() > 0.05
    # a target equal to the benchmarks' own composition is the unweighted program
    own = _utilimax(target_skills={"code": 2, "knowledge": 1})
    np.testing.assert_allclose(list(own.weights.values()), list(plain.weights.values()), atol=1e-4)


def test_reweighted_weakest_link_equals_the_hand_written_program():
    mix = solve(SIZES, BUDGET, "weakest_link", max_epochs=CAP, utility=UTILITY, lam=LAM, risk="identity",
                normalize="none", target_skills={"code": 0.5, "knowledge": 0.5})
    w, worst = cp.Variable(3, nonneg=True), cp.Variable(2)
    caps = CAP * np.array(list(SIZES.values())) / BUDGET
    cp.Problem(cp.Maximize(0.5 * worst[0] + 0.5 * worst[1] - LAM * cp.sum_squares(w)),
               [U[:, :2].T @ w >= worst[0], U[:, 2] @ w >= worst[1], cp.sum(w) == 1, w <= caps]).solve(solver="CLARABEL")
    np.testing.assert_allclose(list(mix.weights.values()), w.value, atol=1e-4)


@pytest.mark.parametrize("params,match", [({"target_skills": {"math": 1.0}}, "no benchmark has skill math"),
                                          ({"target_skills": {"cooking": 1.0}}, "skill 'cooking'"),
                                          ({"target_skills": {"code": -1.0}}, "finite number >= 0"),
                                          ({"target_skills": {"code": 1.0}, "benchmark_skills": {"mmlu": "x"}},
                                           "benchmark_skills.mmlu")])
def test_bad_target_is_one_config_error_line(params, match):
    with pytest.raises(ConfigError, match=match) as err:
        _utilimax(**params)
    assert "\n" not in str(err.value)


def test_untagged_benchmark_with_a_target_is_a_config_error():
    utility = {s: {**row, "my_bench": 0.5} for s, row in UTILITY.items()}
    with pytest.raises(ConfigError, match="untagged: my_bench"):
        solve(SIZES, BUDGET, "utilimax", max_epochs=CAP, utility=utility, target_skills={"code": 1.0})
    mix = solve(SIZES, BUDGET, "utilimax", max_epochs=CAP, utility=utility, target_skills={"code": 1.0},
                benchmark_skills={"my_bench": "code"})
    assert mix.params["skill_weights"]["mmlu"] == 0.0


def _write_run(tmp_path: Path, target: dict | None) -> Path:
    from mixweave.pipeline.stages.mix import solve_and_write_mixture

    tmp_path.mkdir(parents=True, exist_ok=True)
    utility = tmp_path / "utility.csv"
    pd.DataFrame(UTILITY).T.rename_axis("source").reset_index().to_csv(utility, index=False)
    stats = {"schema_version": 1, "tokenizer": TOKENIZER,
             "sources": {n: {"n_docs": 3, "n_tokens": t, "n_bytes": 4 * t, "bytes_per_token": 4.0, "paths": []}
                         for n, t in SIZES.items()}}
    out = tmp_path / "run"
    params = {"lam": LAM, "risk": "identity", "normalize": "none",
              **({"target_skills": target} if target else {})}
    solve_and_write_mixture(out / "mix", stats, method="utilimax", budget_tokens=BUDGET, max_epochs=CAP,
                            utility_path=utility, params=params)
    return out


def test_mixture_json_records_the_skill_weights_and_the_report_warns(tmp_path):
    from mixweave.data.mixture_manifest import read_mixture_manifest
    from mixweave.pipeline.report import build_report

    far = _write_run(tmp_path / "far", {"code": 0.1, "knowledge": 0.9})  # validation: 2/3 code, 1/3 knowledge
    m = read_mixture_manifest(far / "mix" / "mixture.json")
    assert m["method"]["params"]["target_skills"] == pytest.approx({"code": 0.1, "knowledge": 0.9})
    assert m["method"]["params"]["skill_weights"] == pytest.approx({"humaneval": 0.15, "mbpp": 0.15, "mmlu": 2.7})
    assert total_variation(skill_composition(m["method"]["params"]["benchmark_skills"]),
                           {"code": 0.1, "knowledge": 0.9}) == pytest.approx(2 / 3 - 0.1)
    page = build_report(far)
    assert "<h2>Skills</h2>" in page and "far from the target: total variation 0.57 &gt; 0.2" in page
    assert "validation share" in page and "Per-skill utility" in page
    # per-skill utility of the mixture: sum_i w_i * mean of the skill's raw utilities
    w = {s["name"]: s["weight"] for s in m["sources"]}
    code = sum(w[s] * (UTILITY[s]["humaneval"] + UTILITY[s]["mbpp"]) / 2 for s in SIZES)
    from mixweave.pipeline.skills_report import skill_utility

    assert skill_utility(m)[1]["mixture"]["code"] == pytest.approx(code)
    assert "= 12,000 bytes" in page  # the budget in both units (4 bytes per token)

    def section(target):  # the skills section alone, on a manifest built without files or charts
        from mixweave.data.mixture_manifest import build_mixture_manifest
        from mixweave.pipeline.skills_report import skills_section

        mix = _utilimax(**({"target_skills": target} if target else {}))
        stats = {"tokenizer": TOKENIZER, "sources": {n: {"n_docs": 3, "n_tokens": t} for n, t in SIZES.items()}}
        return skills_section(build_mixture_manifest(mix, stats, seq_len=128, seed=0))

    near = section({"code": 0.6, "knowledge": 0.4})
    assert "far from the target" not in near and "Total variation between" in near
    plain = section(None)
    assert "no target composition set" in plain and "far from the target" not in plain
