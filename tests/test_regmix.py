"""RegMix: the Dirichlet sampler's rules (tempered prior, concentration grid, 15x-prior rejection,
tiny weights zeroed and rounded, de-duplication), the regression recovering a known synthetic optimum,
and the driver end to end on a tiny real pack with 4 proxies."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mixweave.errors import ConfigError
from mixweave.mixers.regmix import (concentrations, fit_regressor, predict_and_average, sample_mixtures,
                                    simulate_mixtures, tempered_prior)

S = 32


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tests/conftest.py


# -- the sampler -------------------------------------------------------------------------------------------


def test_tempered_prior_and_concentration_grid():
    # [.8, .2] ** .5 = [.8944, .4472] -> normalised [2/3, 1/3]
    np.testing.assert_allclose(tempered_prior(np.array([0.8, 0.2]), 0.5), [2 / 3, 1 / 3], rtol=1e-12)
    np.testing.assert_allclose(tempered_prior(np.array([0.8, 0.2]), 1.0), [0.8, 0.2])
    grid = concentrations()
    assert len(grid) == 15 and grid[0] == pytest.approx(0.1) and grid[-1] == pytest.approx(5.0)
    np.testing.assert_allclose(grid[1:] / grid[:-1], (5.0 / 0.1) ** (1 / 14))  # log-spaced


def test_sampled_mixtures_follow_the_official_rules():
    prior = np.array([0.9, 0.06, 0.04])
    w = sample_mixtures(prior, 64, seed=1)
    assert w.shape == (64, 3)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-12)
    # rejection above 15x the (untempered) prior: .06 * 15 = .9, .04 * 15 = .6 (rounding to 2e-4 and
    # renormalising move a weight by far less than 1e-3)
    assert np.all(w[:, 1] <= 0.9 + 1e-3) and np.all(w[:, 2] <= 0.6 + 1e-3)
    # tiny weights are zeroed: every weight is 0 or at least about 2e-4, and (before renormalising) a
    # multiple of 2e-4
    assert np.all((w == 0) | (w >= 2e-4 * 0.99))
    assert np.any(w == 0)  # small concentrations put almost no mass on some sources
    # distinct rows (L1 > 1e-5) and seeded
    diffs = np.abs(w[:, None, :] - w[None, :, :]).sum(-1) + np.eye(64)
    assert diffs.min() > 1e-5
    np.testing.assert_array_equal(w, sample_mixtures(prior, 64, seed=1))
    assert not np.array_equal(w, sample_mixtures(prior, 64, seed=2))


def test_sampler_rejects_heavy_draws_and_centres_on_the_tempered_prior():
    prior = np.array([0.8, 0.2])
    # no binding bound: the mean of the draws is the tempered prior [2/3, 1/3]
    sims = simulate_mixtures(prior, 40_000, seed=3, max_usage=1e9)
    assert len(sims) == 40_000
    np.testing.assert_allclose(sims.mean(axis=0), [2 / 3, 1 / 3], atol=0.01)
    # a bound of 1.5x the prior (.3 for the small source): every draw above it is rejected
    bounded = simulate_mixtures(prior, 40_000, seed=3, max_usage=1.5)
    assert 0 < len(bounded) < 40_000 and bounded[:, 1].max() <= 0.3 + 1e-3
    # a request the bound cannot satisfy is one ConfigError
    with pytest.raises(ConfigError, match="pass the"):
        sample_mixtures(np.array([0.5, 0.5]), 10, seed=0, max_usage=1.0001, oversample=1)


# -- the regression ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["quadratic", "gbm"])
def test_regression_recovers_a_known_interior_optimum(kind):
    prior = np.array([0.5, 0.3, 0.2])
    optimum = np.array([0.2, 0.5, 0.3])
    x = sample_mixtures(prior, 300, seed=7)
    y = 2.0 + ((x - optimum) ** 2).sum(axis=1) + 0.5 * (x[:, 0] - optimum[0]) ** 2  # minimum 2.0 at optimum
    model = fit_regressor(x, y, kind, seed=0)
    w, info = predict_and_average(model, prior, n_simulate=20_000, top_k=64, seed=11)
    assert math.isclose(w.sum(), 1.0, rel_tol=1e-12)
    assert np.abs(w - optimum).max() < 0.05, w
    assert info["n_simulated"] > 15_000 and info["top_k"] == 64
    assert info["predicted_best"] <= info["predicted_mean_top_k"]


def test_linear_regression_moves_weight_to_the_lowest_loss_source():
    prior = np.array([0.4, 0.3, 0.3])
    x = sample_mixtures(prior, 50, seed=5)
    y = x @ np.array([3.0, 1.0, 2.0])  # source 1 has the lowest loss
    w, _ = predict_and_average(fit_regressor(x, y, "linear"), prior, n_simulate=5_000, top_k=16, seed=1)
    assert w[1] > 0.9
    with pytest.raises(ConfigError, match="not finite"):
        fit_regressor(x, np.full(50, np.nan), "linear")
    with pytest.raises(ConfigError, match="at least two"):
        fit_regressor(x[:1], y[:1], "linear")


# -- the driver --------------------------------------------------------------------------------------------


def test_regmix_driver_with_four_proxies(tiny_sample, tmp_path):
    from mixweave.mixers.learned import learned_weights
    from mixweave.trainer.model import GPT, GPTConfig

    names = sorted(tiny_sample.tokens)
    n = [tiny_sample.tokens[x] for x in names]
    params = {"depth": 1, "steps": 4, "batch_size": 4, "n_proxies": 4, "n_simulate": 2_000, "top_k": 16,
              "holdout_windows": 8}
    res = learned_weights("regmix", tiny_sample.pack_dir, names, n, params, tmp_path / "auto",
                          benchmarks=tiny_sample.benchmarks_path)
    rec = res.record
    assert rec["target"] == "benchmarks" and len(rec["proxies"]) == 4
    mixtures = np.array([[p["mixture"][x] for x in names] for p in rec["proxies"]])
    assert len({tuple(m) for m in mixtures}) == 4
    np.testing.assert_allclose(mixtures, sample_mixtures(np.array(n) / sum(n), 4, seed=0))
    # each proxy's target is the mean benchmark answer loss of its own eval.json
    for p in rec["proxies"]:
        ev = json.loads((tmp_path / "auto" / p["folder"] / "eval.json").read_text())
        assert p["target_loss"] == pytest.approx(np.mean([b["loss"] for b in ev["benchmarks"].values()]))
        assert p["tokens"] == 4 * 4 * (S - 1) and p["steps"] == 4
    gpt = GPT(GPTConfig.from_depth(1, vocab_size=512, seq_len=S))
    non_embed = gpt.num_params() - gpt.wte.weight.numel()
    assert rec["flops"] == pytest.approx(4 * 6 * non_embed * 4 * 4 * (S - 1))
    w = np.array([res.weights[x] for x in names])
    assert math.isclose(w.sum(), 1.0, rel_tol=1e-9) and np.all(w >= 0)
    # held-out target: the mean over sources of the held-out windows' loss
    held = learned_weights("regmix", tiny_sample.pack_dir, names, n, {**params, "target": "heldout", "regressor": "gbm"},
                           tmp_path / "held")
    ev = json.loads((tmp_path / "held" / "proxy-000" / "eval.json").read_text())
    assert set(ev["sources"]) == set(names)
    assert held.record["proxies"][0]["target_loss"] == pytest.approx(np.mean(list(ev["sources"].values())))
    with pytest.raises(ConfigError, match="needs benchmarks"):
        learned_weights("regmix", tiny_sample.pack_dir, names, n, {**params, "target": "benchmarks"}, tmp_path / "x")
