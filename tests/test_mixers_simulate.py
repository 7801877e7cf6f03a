"""Simulated data constraints, multi-phase mixtures and the chart."""

from __future__ import annotations

import numpy as np
import pytest

from mixweave.errors import ConfigError, InfeasibleError, InputError
from mixweave.mixers import simulate_data_constraints, solve, solve_phases
from mixweave.mixers.simulate import doc_permutation

SIZES = {"web": 1_000_000, "code": 50_000, "wiki": 20_000}


# --- simulated data constraints ---------------------------------------------------------------

def test_token_level_subsets_reproduce_full_run_epochs():
    target, experiment = 3_000_000, 30_000
    mix = solve(SIZES, target, "unimax", max_epochs=4)
    subsets = simulate_data_constraints(SIZES, target, experiment, mix)
    for name, n in SIZES.items():
        sub = subsets[name]
        assert sub.n_tokens == int(n * 0.01) and sub.fraction == pytest.approx(0.01)
        assert sub.epochs == pytest.approx(mix.epochs[name], rel=1e-3)
        assert sub.doc_indices is None


def test_token_level_subsets_scale_n_docs_when_known():
    sources = {"a": {"n_tokens": 1000, "n_docs": 10}, "b": 500}
    subsets = simulate_data_constraints(sources, 100, 50)
    assert subsets["a"].n_docs == 5 and subsets["b"].n_docs is None and subsets["a"].epochs is None


def test_doc_level_subsets_are_nested_prefixes():
    rng = np.random.default_rng(7)
    lengths = {"web": rng.integers(1, 2000, size=2000), "code": rng.integers(1, 500, size=300)}
    sources = {n: int(v.sum()) for n, v in lengths.items()}
    target = 10 * sum(sources.values())
    previous = None
    for experiment in (target // 100, target // 20, target // 4, target):
        subsets = simulate_data_constraints(sources, target, experiment, doc_lengths=lengths, seed=3)
        for name, sub in subsets.items():
            goal = int(experiment / target * sources[name])
            assert goal <= sub.n_tokens < goal + lengths[name].max() + 1
            assert sub.n_tokens == int(lengths[name][sub.doc_indices].sum())
            assert sub.n_docs == len(sub.doc_indices) == len(set(sub.doc_indices.tolist()))
            if previous is not None:
                before = previous[name].doc_indices
                assert np.array_equal(sub.doc_indices[: len(before)], before)
        previous = subsets
    assert len(previous["web"].doc_indices) == 2000  # the full budget takes every document


def test_doc_permutation_is_seeded_and_source_specific():
    assert np.array_equal(doc_permutation(50, "web", 1), doc_permutation(50, "web", 1))
    assert not np.array_equal(doc_permutation(50, "web", 1), doc_permutation(50, "web", 2))
    assert not np.array_equal(doc_permutation(50, "web", 1), doc_permutation(50, "code", 1))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"target_budget": 100, "experiment_budget": 200}, ConfigError, "exceeds target_budget"),
    ({"target_budget": 0, "experiment_budget": 0}, ConfigError, "budget_tokens"),
    ({"target_budget": 1e9, "experiment_budget": 10}, InfeasibleError,
     "sources web, code, wiki get no data.*at least 50,000 "),
    ({"target_budget": 100, "experiment_budget": 10, "doc_lengths": {"zz": [1]}}, InputError,
     "unknown sources zz"),
    ({"target_budget": 100, "experiment_budget": 10, "doc_lengths": {"web": [-1, 2]}}, InputError,
     "doc_lengths"),
])
def test_simulate_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        simulate_data_constraints(SIZES, **kwargs)


def test_simulate_rejects_a_mixture_for_another_budget():
    mix = solve(SIZES, 1_000_000, "unimax", max_epochs=4)
    with pytest.raises(ConfigError, match="solve it at the target budget"):
        simulate_data_constraints(SIZES, 2_000_000, 10_000, mix)


# --- phases --------------------------------------------------------------------------------------

def test_phases_share_one_epoch_cap():
    combined, phases = solve_phases(SIZES, [(500_000, {"web": .8, "code": .1, "wiki": .1}),
                                            (2_000_000, "unimax")], max_epochs=4)
    assert [p.method for p in phases] == ["manual", "unimax"]
    assert combined.budget_tokens == 2_500_000 and combined.method == "phased"
    for name in SIZES:
        total = sum(p.epochs[name] for p in phases)
        assert combined.epochs[name] == pytest.approx(total)
        assert total <= 4 * (1 + 1e-12)
    assert combined.binding["wiki"] == "epoch_cap"
    assert phases[1].max_epochs["wiki"] == pytest.approx(4 - 2.5)
    assert sum(combined.weights.values()) == pytest.approx(1.0)


def test_phase_with_method_params_and_shared_utility():
    utility = {"web": {"q": 1.0}, "code": {"q": 0.2}, "wiki": {"q": 0.9}}
    combined, phases = solve_phases(SIZES, [(100_000, ("temperature", {"tau": 2.0})),
                                            (200_000, "utilimax")], max_epochs=4, utility=utility)
    assert phases[0].params["tau"] == 2.0 and phases[1].solver == "CLARABEL"
    assert combined.utility["wiki"] == {"q": 0.9}


def test_phase_errors_name_the_phase():
    with pytest.raises(InfeasibleError, match="phase 1: .*wiki.*phases 0..0 left"):
        solve_phases(SIZES, [(1_000_000, "unimax"), (100_000, {"web": 1, "code": 1, "wiki": 1})],
                     max_epochs=4)
    with pytest.raises(ConfigError, match="phase 0"):
        solve_phases(SIZES, [(100, 3)])
    with pytest.raises(ConfigError, match="no phases"):
        solve_phases(SIZES, [])


# --- chart ---------------------------------------------------------------------------------------

def test_plot_mixture_writes_a_png(tmp_path):
    from mixweave.data.mixture_manifest import build_mixture_manifest
    from mixweave.mixers.chart import plot_mixture

    stats = {"schema_version": 1, "sources": {n: {"n_tokens": t, "n_docs": 1, "paths": []}
                                              for n, t in SIZES.items()}}
    tokenizer = {"name": "gpt2", "path": "tok.json", "sha256": "0" * 64, "vocab_size": 50257,
                 "eos_id": 50256, "dtype": "uint16"}
    mix = solve(SIZES, 500_000, "unimax", max_epochs=4)
    manifest = build_mixture_manifest(mix, stats, seq_len=128, tokenizer=tokenizer, seed=0)
    out = plot_mixture(manifest, tmp_path / "charts" / "mixture.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
