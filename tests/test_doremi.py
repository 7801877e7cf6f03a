"""DoReMi: the exponentiated-gradient domain-weight update against hand-computed steps, smoothing,
averaging over steps, the group-DRO loop against a brute-force recomputation of its first step, and
the driver end to end (reference + proxy) on a tiny real pack (the corpus fixture, 512-id BPE)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mixweave.mixers.doremi import DoReMiReweighter, average_weights, domain_excess, update_domain_weights

S = 32


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tests/conftest.py


# -- the pure update --------------------------------------------------------------------------------------


def test_update_matches_a_hand_computed_step():
    # log a' = log[.5, .25, .25] + 1 * [0, ln 2, 0] -> a' ~ [.5, .5, .25] -> softmax [.4, .4, .2];
    # smoothing c = .1 over k = 3: .9 * [.4, .4, .2] + .1 / 3
    out = update_domain_weights(np.array([0.5, 0.25, 0.25]), np.array([0.0, 0.6931471805599453, 0.0]),
                                eta=1.0, smoothing=0.1)
    np.testing.assert_allclose(out, [0.39333333333333333, 0.39333333333333333, 0.21333333333333333], rtol=1e-12)
    # eta scales the excess: eta = 2 with excess ln 2 / 2 is the same step
    out2 = update_domain_weights(np.array([0.5, 0.25, 0.25]), np.array([0.0, 0.34657359027997264, 0.0]),
                                 eta=2.0, smoothing=0.1)
    np.testing.assert_allclose(out2, out, rtol=1e-12)


def test_excess_is_clipped_per_token_and_averaged_per_domain():
    # domain 0 tokens: proxy - reference = .5, -1 (clipped to 0), 1.5 -> mean 2/3; domain 1: one token of 2;
    # domain 2 absent: keeps its previous value .7
    diffs = np.array([0.5, -1.0, 1.5, 2.0])
    lam = domain_excess(np.maximum(diffs, 0), np.ones(4), np.array([0, 0, 0, 1]), 3, previous=np.array([9, 9, 0.7]))
    np.testing.assert_allclose(lam, [2 / 3, 2.0, 0.7], rtol=1e-12)
    # rows of several tokens: sums and counts per row give the same mean
    lam_rows = domain_excess(np.array([2.0, 2.0]), np.array([3, 1]), np.array([0, 1]), 3)
    np.testing.assert_allclose(lam_rows, [2 / 3, 2.0, 0.0], rtol=1e-12)


def test_smoothing_keeps_every_domain_above_c_over_k():
    alpha = np.array([0.25, 0.25, 0.25, 0.25])
    excess = np.array([50.0, 0.0, 0.0, 0.0])  # a huge step: without smoothing nearly one-hot
    raw = update_domain_weights(alpha, excess, eta=1.0, smoothing=0.0)
    assert raw[0] == pytest.approx(1.0) and raw[1:].max() < 1e-20  # e^-50 / (1 + 3 e^-50)
    smooth = update_domain_weights(alpha, excess, eta=1.0, smoothing=0.2)
    np.testing.assert_allclose(smooth[1:], 0.05, rtol=1e-9)  # c / k = .2 / 4
    np.testing.assert_allclose(smooth[0], 0.8 + 0.05, rtol=1e-9)
    assert math.isclose(smooth.sum(), 1.0, rel_tol=1e-12)
    # zero excess is a fixed point of the unsmoothed update
    np.testing.assert_allclose(update_domain_weights(np.array([0.7, 0.3]), np.zeros(2), 1.0, 0.0), [0.7, 0.3])


def test_reweighter_averages_the_weights_over_steps():
    rw = DoReMiReweighter(np.array([0.5, 0.5]), eta=1.0, smoothing=0.0)
    # step 1: excess [ln 3, 0] -> [3/4, 1/4]
    np.testing.assert_allclose(rw(np.array([1.0986122886681098, 0.0]), np.ones(2), np.array([0, 1])), [0.75, 0.25])
    # step 2: excess [0, ln 3] -> [3/4, 3/4] normalised = [1/2, 1/2]
    np.testing.assert_allclose(rw(np.array([0.0, 1.0986122886681098]), np.ones(2), np.array([0, 1])), [0.5, 0.5])
    np.testing.assert_allclose(rw.average, [0.625, 0.375])  # mean of [3/4, 1/4] and [1/2, 1/2]
    # step 3: only domain 1 in the batch with excess 0; domain 0 keeps its last excess (0): unchanged
    np.testing.assert_allclose(rw(np.array([0.0]), np.ones(1), np.array([1])), [0.5, 0.5])
    np.testing.assert_allclose(rw.average, [(0.75 + 0.5 + 0.5) / 3, (0.25 + 0.5 + 0.5) / 3])
    np.testing.assert_allclose(average_weights(np.array([[0.2, 0.8], [0.4, 0.6]])), [0.3, 0.7])


# -- the group-DRO loop -----------------------------------------------------------------------------------


def test_group_dro_first_step_matches_brute_force(tiny_sample):
    from mixweave.data.windows import windows_info
    from mixweave.mixers.learned import mixture_plan
    from mixweave.trainer.config import TrainConfig
    from mixweave.trainer.dataset import MixtureLoader, PackDataset
    from mixweave.trainer.group_dro import train_group_dro
    from mixweave.trainer.model import GPT, GPTConfig

    info = windows_info(tiny_sample.pack_dir)
    names = ["books", "code", "web"]
    dataset = PackDataset(tiny_sample.pack_dir, names)
    plan = mixture_plan(info, names, np.ones(3) / 3, 24, seed=4)
    gcfg = GPTConfig.from_depth(1, vocab_size=int(info.tokenizer["vocab_size"]), seq_len=S)
    torch.manual_seed(11)
    reference = GPT(gcfg)
    cfg = TrainConfig(depth=1, steps=1, batch_size=6, seed=3, data_seed=4, device="cpu", grad_clip=0.0)
    seen = {}
    fixed = np.array([0.2, 0.3, 0.5])

    def reweight(excess, n_tok, dom):
        seen.update(excess=excess.copy(), n_tok=n_tok.copy(), dom=dom.copy())
        return fixed

    result = train_group_dro(plan, dataset, reference, cfg, reweight)
    # brute force: the same first batch, the same initial proxy, every window on its own
    idx = MixtureLoader(dataset, plan, 6, seed=4).sampler.take(6)
    torch.manual_seed(3)
    proxy = GPT(gcfg).eval()
    bounds = np.cumsum([0] + [int(c) for c in dataset.counts])
    num = den = 0.0
    with torch.no_grad():
        for row, i in enumerate(idx):
            d = int(np.searchsorted(bounds, i, side="right") - 1)
            assert seen["dom"][row] == d
            w = torch.from_numpy(dataset.windows[i].astype(np.int64))[None]
            lp = torch.nn.functional.cross_entropy(proxy(w[:, :-1])[0].float(), w[0, 1:], reduction="none")
            lr = torch.nn.functional.cross_entropy(reference(w[:, :-1])[0].float(), w[0, 1:], reduction="none")
            assert seen["excess"][row] == pytest.approx(float((lp - lr).clamp_min(0).sum()), rel=1e-4, abs=1e-5)
            assert seen["n_tok"][row] == S - 1
            ratio = fixed[d] / (1 / 3)  # alpha / uniform sampling share
            num += ratio * float(lp.sum())
            den += ratio * (S - 1)
    assert result.losses[0] == pytest.approx(num / den, rel=1e-4)
    assert result.tokens == 6 * (S - 1)


# -- the driver --------------------------------------------------------------------------------------------


def test_doremi_driver_end_to_end_is_deterministic(tiny_sample, tmp_path):
    from mixweave.mixers.learned import learned_weights
    from mixweave.trainer.model import GPT, GPTConfig

    names = sorted(tiny_sample.tokens)
    n = [tiny_sample.tokens[x] for x in names]
    params = {"depth": 1, "steps": 6, "batch_size": 4, "reference_steps": 4, "eta": 1.0, "smoothing": 1e-3}
    a = learned_weights("doremi", tiny_sample.pack_dir, names, n, params, tmp_path / "a")
    b = learned_weights("doremi", tiny_sample.pack_dir, names, n, params, tmp_path / "b")
    assert a.weights == b.weights  # seeded: bit-identical on CPU
    w = np.array([a.weights[x] for x in names])
    assert math.isclose(w.sum(), 1.0, rel_tol=1e-9) and np.all(w >= 1e-3 / 3 * 0.999)
    rec = a.record
    # the weights are the average of the per-step weights the proxy wrote
    rows = [json.loads(line) for line in (tmp_path / "a" / rec["proxy"]["weights_per_step"]).read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    np.testing.assert_allclose(w, np.mean([[r["weights"][x] for x in names] for r in rows], axis=0), rtol=1e-9)
    # reference on the natural mixture; FLOPs = 6 N T_ref + 8 N T_proxy with N the non-embedding params
    np.testing.assert_allclose([rec["reference"]["mixture"][x] for x in names], np.array(n) / sum(n))
    gpt = GPT(GPTConfig.from_depth(1, vocab_size=512, seq_len=S))
    non_embed = gpt.num_params() - gpt.wte.weight.numel()
    assert rec["model"]["non_embedding_params"] == non_embed
    assert rec["reference"]["tokens"] == 4 * 4 * (S - 1) and rec["proxy"]["tokens"] == 6 * 4 * (S - 1)
    assert rec["flops"] == pytest.approx(6 * non_embed * 4 * 4 * (S - 1) + 8 * non_embed * 6 * 4 * (S - 1))
    assert (tmp_path / "a" / "reference" / "eval.json").is_file()
    # a uniform reference is recorded as such
    c = learned_weights("doremi", tiny_sample.pack_dir, names, n, {**params, "reference": "uniform", "steps": 2},
                        tmp_path / "c")
    assert c.record["reference"]["mixture"] == {x: pytest.approx(1 / 3) for x in names}
