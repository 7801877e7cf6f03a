"""Branch-train-stitch mixtures (mix.bts, issue 14 item 3): the pure weights against hand-computed
values and a brute-force capping reference, the config checks (one ConfigError line each), and the
mix stage's expert/stitch variants on a copy of the small reference run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mixweave.errors import ConfigError, InfeasibleError
from mixweave.mixers.bts import BtsConfig, bts_mixtures, expert_weights, fit_under_caps, stitch_weights

SEED = {"a": 0.5, "b": 0.3, "c": 0.2, "d": 0.0}


# ------------------------------------------------------------------------------ pure weights
def test_expert_weights_by_hand():
    # domain {c, d} gets 0.6 in the seed's ratio (c 0.2 : d 0) -> c 0.6; a, b share 0.4 as 0.5 : 0.3
    assert expert_weights(SEED, ["c", "d"], 0.6) == pytest.approx({"a": 0.25, "b": 0.15, "c": 0.6, "d": 0.0})
    # the seed gives domain {d} nothing: it gets its share anyway, split equally
    assert expert_weights(SEED, ["d"], 0.5) == pytest.approx({"a": 0.25, "b": 0.15, "c": 0.1, "d": 0.5})
    assert expert_weights(SEED, ["a", "b"], 1.0) == pytest.approx({"a": 0.625, "b": 0.375, "c": 0.0, "d": 0.0})
    # every source in the domain: only a share of 1 means anything
    assert expert_weights(SEED, list(SEED), 1.0) == pytest.approx(SEED)
    with pytest.raises(ConfigError, match="covers every source"):
        expert_weights(SEED, list(SEED), 0.5)
    with pytest.raises(ConfigError, match="unknown sources z"):
        expert_weights(SEED, ["z"], 0.5)


def test_stitch_weights_by_hand():
    experts = {"x": ["a"], "y": ["c", "d"]}
    assert stitch_weights(SEED, experts, "equal") == pytest.approx({"a": 0.5, "b": 0.0, "c": 0.5, "d": 0.0})
    # seed: the domains in the seed's ratio 0.5 : 0.2
    assert stitch_weights(SEED, experts, "seed") == pytest.approx({"a": 5 / 7, "b": 0.0, "c": 2 / 7, "d": 0.0})
    # a domain the seed gives nothing: equal inside it, and (seed mode) no stitch share
    assert stitch_weights(SEED, {"x": ["b"], "y": ["d"]}, "equal") == pytest.approx(
        {"a": 0.0, "b": 0.5, "c": 0.0, "d": 0.5})
    assert stitch_weights(SEED, {"x": ["b"], "y": ["d"]}, "seed") == pytest.approx(
        {"a": 0.0, "b": 1.0, "c": 0.0, "d": 0.0})
    with pytest.raises(ConfigError, match="sources b are in more than one expert domain"):
        stitch_weights(SEED, {"x": ["a", "b"], "y": ["b"]})


def _brute_force_fit(weights, groups, caps):
    """Reference for fit_under_caps: repeat 'pin whatever is over its cap, hand the excess to the
    unpinned members of the same group by weight (to other groups by their totals when the group
    is full)' until nothing moves; O(k^3), only for tiny k."""
    w = np.array(weights, dtype=float)
    for _ in range(100):
        over = w > caps + 1e-15
        if not over.any():
            break
        excess_by_group = {}
        for i in np.flatnonzero(over):
            excess_by_group[groups[i]] = excess_by_group.get(groups[i], 0.0) + w[i] - caps[i]
            w[i] = caps[i]
        for g, excess in excess_by_group.items():
            free = [i for i in range(len(w)) if groups[i] == g and w[i] < caps[i] - 1e-15 and w[i] > 0]
            if free:
                w[free] += excess * w[free] / w[free].sum()
            else:  # the group is full: the other groups with room, by their totals
                others = [h for h in set(groups) if h != g and h >= 0]
                totals = {h: w[[i for i in range(len(w)) if groups[i] == h and w[i] < caps[i] - 1e-15]].sum()
                          for h in others}
                mass = sum(totals.values())
                for h in others:
                    free = [i for i in range(len(w)) if groups[i] == h and w[i] < caps[i] - 1e-15]
                    if free and totals[h] > 0:
                        w[free] += excess * totals[h] / mass * w[free] / w[free].sum()
    return w


def test_fit_under_caps_matches_a_brute_force_reference():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        k = int(rng.integers(3, 6))
        weights = rng.dirichlet(np.ones(k))
        groups = rng.integers(0, 2, size=k)
        if len(set(groups)) < 2:
            continue
        caps = rng.uniform(0.05, 0.8, size=k)
        if caps.sum() < 1.05:
            continue
        got = fit_under_caps(weights, groups, caps)
        assert got.sum() == pytest.approx(1.0) and np.all(got <= caps * (1 + 1e-12)) and np.all(got >= 0)
        want = _brute_force_fit(weights, groups, caps)
        if np.all(want <= caps + 1e-12):  # the naive loop settled
            np.testing.assert_allclose(got, want, atol=1e-9)
            checked += 1
    assert checked > 50


def test_caps_bind_and_move_the_excess_outside_the_domain():
    bts = BtsConfig(experts={"x": ["a"], "y": {"sources": ["c", "d"], "domain_share": 0.9}},
                    expert_budget_tokens=1000, stitch_budget_tokens=100)
    sizes = {"a": 100, "b": 200, "c": 300, "d": 50}
    out = bts_mixtures(sizes, SEED, bts, 4.0, seed_method="unimax")
    assert list(out) == ["expert-x", "expert-y", "stitch"]
    x = out["expert-x"]
    # a wants 0.5 of 1000 tokens but holds 4 x 100 = 400: capped at 0.4; the 0.6 left goes to b, c as 0.3 : 0.2
    assert dict(x.weights) == pytest.approx({"a": 0.4, "b": 0.36, "c": 0.24, "d": 0.0})
    assert x.binding["a"] == "epoch_cap" and x.epochs["a"] == pytest.approx(4.0)
    assert x.params["domain_share_after_caps"] == pytest.approx(0.4) and x.method == "bts_expert"
    y = out["expert-y"]  # c 0.9 = 900 tokens = 3 epochs: under the cap
    assert dict(y.weights) == pytest.approx({"a": 0.0625, "b": 0.0375, "c": 0.9, "d": 0.0})
    assert set(y.binding.values()) <= {"none", "nonneg"}
    stitch = out["stitch"]
    assert dict(stitch.weights) == pytest.approx({"a": 0.5, "b": 0.0, "c": 0.5, "d": 0.0})
    assert stitch.budget_tokens == 100 and stitch.params["experts"] == {"x": ["a"], "y": ["c", "d"]}


def test_a_full_domain_passes_its_excess_to_the_other_expert_domains_in_the_stitch_set():
    bts = BtsConfig(experts={"x": ["a"], "y": ["c", "d"]}, expert_budget_tokens=100, stitch_budget_tokens=600)
    sizes = {"a": 50, "b": 200, "c": 300, "d": 50}
    stitch = bts_mixtures(sizes, SEED, bts, 2.0)["stitch"]
    # equal: a 0.5 of 600 = 300 > 2 x 50 = 100 tokens; a capped at 1/6, y takes 5/6 (c only: d's seed weight is 0)
    assert dict(stitch.weights) == pytest.approx({"a": 1 / 6, "b": 0.0, "c": 5 / 6, "d": 0.0})
    assert stitch.binding["a"] == "epoch_cap"


def test_a_stitch_budget_beyond_the_expert_domains_is_one_clear_error():
    bts = BtsConfig(experts={"x": ["a"]}, expert_budget_tokens=100, stitch_budget_tokens=1000)
    with pytest.raises(InfeasibleError, match=r"bts stitch set: 1,000 tokens need more than its sources \(a\) hold "
                                              r"under max_epochs: at most 400 tokens"):
        bts_mixtures({"a": 100, "b": 1000}, {"a": 0.5, "b": 0.5}, bts, 4.0)
    bts = BtsConfig(experts={"x": ["a"]}, expert_budget_tokens=10_000, stitch_budget_tokens=10)
    with pytest.raises(InfeasibleError, match="bts expert x: 10,000 tokens"):
        bts_mixtures({"a": 100, "b": 1000}, {"a": 0.5, "b": 0.5}, bts, 4.0)


# ------------------------------------------------------------------------------ config
BASE = {"out": "out/x", "sources": {n: {"paths": [f"data/{n}/*.jsonl"]} for n in ("books", "code", "web")},
        "order": {"seq_len": 128}}
OK_BTS = {"experts": {"code": ["code"]}, "expert_budget_tokens": 1000, "stitch_budget_tokens": 200}


def _parse(bts, **extra):
    from mixweave.pipeline.config import parse_config

    return parse_config({**BASE, **extra, "mix": {"method": "unimax", "bts": bts}})


@pytest.mark.parametrize("bts, message", [
    ({**OK_BTS, "experts": {"code": ["cod"]}}, "mix.bts.experts.code: unknown sources cod; the run's sources are"),
    ({**OK_BTS, "experts": {"code": ["code"], "prose": ["books", "code"]}},
     "mix.bts.experts: source code is in both code and prose"),
    ({**OK_BTS, "domain_share": 0}, r"mix.bts.domain_share must be in \(0, 1\]"),
    ({**OK_BTS, "experts": {"code": {"sources": ["code"], "domain_share": 1.2}}},
     r"mix.bts.experts.code.domain_share must be in \(0, 1\], got 1.2"),
    ({**OK_BTS, "stitch_budget_tokens": 0.5}, "mix.bts.stitch_budget_tokens must be at least 1 token"),
    ({**OK_BTS, "expert_budget_tokens": -5}, "mix.bts.expert_budget_tokens must be at least 1 token"),
    ({**OK_BTS, "stitch": "mean"}, "mix.bts.stitch: 'mean' is not allowed; use one of 'equal', 'seed'"),
    ({**OK_BTS, "experts": {}}, "mix.bts.experts must name at least one expert"),
    ({**OK_BTS, "experts": {"../up": ["code"]}}, "mix.bts expert name '../up'"),
    ({**OK_BTS, "experts": {"code": {"sources": ["code"], "share": 0.7}}}, "unknown key mix.bts.experts.code.share"),
    ({**OK_BTS, "experts": {"all": ["books", "code", "web"]}}, "mix.bts.experts.all covers every source"),
    ({"experts": {"code": ["code"]}, "expert_budget_tokens": 1000}, "missing key mix.bts.stitch_budget_tokens"),
    ({**OK_BTS, "stitch_budget_tokens": 100}, "mix.bts.stitch_budget_tokens 100 is less than one window of 128 tokens"),
])
def test_bad_bts_settings_are_one_config_error_line(bts, message):
    with pytest.raises(ConfigError, match=message) as info:
        _parse(bts)
    assert "\n" not in str(info.value)


def test_bts_and_length_phases_are_refused_together():
    from mixweave.pipeline.config import parse_config

    phases = [{"name": "short", "share": 0.8}, {"name": "long", "share": 0.2, "seq_len": 256}]
    with pytest.raises(ConfigError, match="mix.bts and mix.phases cannot be combined"):
        parse_config({**BASE, "mix": {"method": "unimax", "bts": OK_BTS, "phases": phases}})


def test_bts_needs_an_order_section_and_variant_names_stay_off_export_folders():
    from mixweave.mixers.bts import check_bts

    with pytest.raises(ConfigError, match="mix.bts writes its expert and stitch mixtures over the main pack"):
        _parse(OK_BTS, order=None)
    config = _parse({**OK_BTS, "experts": {"code": ["code"], "prose": {"sources": ["books"], "domain_share": 0.8}}})
    assert config.mix.bts.variant_names() == ["expert-code", "expert-prose", "stitch"]
    assert config.mix.bts.share("prose") == 0.8 and config.mix.bts.share("code") == 0.5
    with pytest.raises(ConfigError, match="variant name stitch clashes with an export format"):
        check_bts(config.mix.bts, ["books", "code", "web"], reserved=("megatron", "stitch"))


def test_mix_and_study_method_params_share_one_coercion_with_their_messages():
    from mixweave.mixers.config import MixConfig
    from mixweave.mixers.params import TemperatureParams, coerce_method_params
    from mixweave.pipeline.study_config import StudyCandidate

    assert coerce_method_params("Temperature", {"tau": 2}, "mix.params") == ("temperature", TemperatureParams(tau=2.0))
    with pytest.raises(ConfigError, match=r"^mix.method 'unimix': use one of proportional, temperature"):
        MixConfig(method="unimix")
    with pytest.raises(ConfigError, match=r"^study.candidates: c1 has unknown method 'unimix'; use one of proportional"):
        StudyCandidate(name="c1", method="unimix")
    with pytest.raises(ConfigError, match="unknown key mix.params.tua"):
        MixConfig(method="temperature", params={"tua": 2})
    with pytest.raises(ConfigError, match="unknown key study.candidates.c1.params.tua"):
        StudyCandidate(name="c1", method="temperature", params={"tua": 2})
    with pytest.raises(ConfigError, match="mix.params: expected the parameters of temperature, got NoParams"):
        MixConfig(method="temperature", params=coerce_method_params("unimax", None, "mix.params")[1])


# ------------------------------------------------------------------------------ the mix stage
@pytest.fixture(scope="module")
def bts_run(small_runs, tmp_path_factory):
    """A copy of the small reference run (books, code, web through mix) with mix.bts, mix re-run."""
    from mixweave.pipeline.runner import run_stages
    from mixweave.pipeline.stages import build_stages

    out = tmp_path_factory.mktemp("bts") / "run"
    shutil.copytree(small_runs.reference, out)
    # books is in no expert: it gets no stitch tokens
    bts = {"experts": {"code": ["code"], "prose": {"sources": ["web"], "domain_share": 0.8}},
           "domain_share": 0.7, "expert_budget_tokens": 3000, "stitch_budget_tokens": 1000, "stitch": "seed"}
    mix = {**small_runs.config_data(out, small_runs.globs)["mix"], "bts": bts}
    config = small_runs.config(out, small_runs.globs, mix=mix)
    reports = {r.name: r.status for r in run_stages(build_stages(), config, wanted=["mix"])}
    return out, config, reports, mix


def test_the_mix_stage_writes_one_mixture_per_expert_and_the_stitch_set(bts_run, small_runs):
    from mixweave.data.mixture_manifest import mixture_variants, read_mixture_manifest
    from mixweave.mixers.capping import weight_caps

    out, config, reports, _ = bts_run
    assert reports["mix"] == "ran" and reports["pack"] == "skipped"  # only mix re-ran
    seed = read_mixture_manifest(out / "mix" / "mixture.json")
    reference = read_mixture_manifest(small_runs.reference / "mix" / "mixture.json")
    assert seed["sources"] == reference["sources"] and seed["schema_version"] == 2
    variants = mixture_variants(out / "mix" / "mixture.json")
    assert [(v.name, v.kind) for v in variants] == [("expert-code", "expert"), ("expert-prose", "expert"),
                                                    ("stitch", "stitch")]
    assert all(v.pack_dir == out / "pack" and v.seq_len == seed["seq_len"] for v in variants)
    assert variants[1].extra["domain"] == ["web"] and variants[1].extra["domain_share"] == 0.8
    listed = {f["path"] for f in json.loads((out / "mix" / "_manifest.json").read_text())["files"]}
    assert {"variants/expert-code.json", "variants/expert-prose.json", "variants/stitch.json"} <= listed
    weights = {s["name"]: s["weight"] for s in seed["sources"]}
    n_tokens = np.array([s["n_tokens"] for s in seed["sources"]], dtype=float)
    for v, domain, share, budget in ((variants[0], ["code"], 0.7, 3000), (variants[1], ["web"], 0.8, 3000)):
        m = read_mixture_manifest(v.mixture_path)
        assert m["budget_tokens"] == budget and m["window"] == seed["window"] and m["order"]["windows"] == "../../pack"
        assert [s["n_tokens"] for s in m["sources"]] == [s["n_tokens"] for s in seed["sources"]]
        got = np.array([s["weight"] for s in m["sources"]])
        pre = np.array(list(expert_weights(weights, domain, share).values()))
        caps = weight_caps(n_tokens, np.full(3, 4.0), budget)
        groups = np.array([0 if s["name"] in domain else 1 for s in seed["sources"]])
        np.testing.assert_allclose(got, fit_under_caps(pre, groups, caps), atol=1e-12)
        assert np.all(got <= caps * (1 + 1e-9))
    stitch = read_mixture_manifest(variants[2].mixture_path)
    assert stitch["budget_tokens"] == 1000 and stitch["method"]["name"] == "bts_stitch"
    assert stitch["method"]["params"]["weights_before_caps"] == pytest.approx(
        stitch_weights(weights, {"code": ["code"], "prose": ["web"]}, "seed"))
    assert next(s for s in stitch["sources"] if s["name"] == "books")["weight"] == 0


def test_bts_is_in_the_mix_fingerprint_only_when_set(bts_run, small_runs):
    from mixweave.pipeline.stages.mix import mix_config_slice

    out, config, _, _ = bts_run
    assert "bts" not in mix_config_slice(small_runs.config(small_runs.reference, small_runs.globs))["mix"]
    assert mix_config_slice(config)["mix"]["bts"]["stitch"] == "seed"
    manifest = json.loads((out / "mix" / "_manifest.json").read_text())
    assert manifest["variants"] == ["expert-code", "expert-prose", "stitch"]
    assert "variants" not in json.loads((small_runs.reference / "mix" / "_manifest.json").read_text())


def test_the_report_shows_the_seed_every_expert_and_the_stitch_set(bts_run):
    from mixweave.data.mixture_manifest import read_mixture_manifest
    from mixweave.pipeline.report import build_report

    out = bts_run[0]
    page = build_report(out)
    assert "<h2>Branch-train-stitch</h2>" in page
    for header in ("seed weight", "expert-code weight", "expert-prose tokens", "stitch weight"):
        assert f"<th>{header}</th>" in page, header
    assert "expert-prose: web at 0.8 of its budget" in page
    stitch = read_mixture_manifest(out / "mix" / "variants" / "stitch.json")
    code = next(s for s in stitch["sources"] if s["name"] == "code")
    assert f"<td>{round(code['target_tokens']):,}</td>" in page.split("<h2>Branch-train-stitch</h2>")[1]


def test_every_bts_variant_is_exported_and_read_by_megatron_core(bts_run, small_runs):
    """Through the export stage (B's generic variant export): export/<variant>/megatron/ for each expert
    and the stitch set, read back by megatron-core's IndexedDataset token-exact, blended by each
    variant's own plan (the stitch set without books)."""
    from mixweave.data.manifest import read_manifest, verify_stage
    from mixweave.data.mixture_manifest import mixture_variants
    from mixweave.data.windows import read_windows
    from mixweave.pipeline.runner import run_stages
    from mixweave.pipeline.stages import build_stages
    from mixweave.trainer.plan import load_plan
    from test_export import _megatron

    out, _, _, mix = bts_run
    config = small_runs.config(out, small_runs.globs, mix=mix, export={"formats": ["megatron"]})
    reports = {r.name: r.status for r in run_stages(build_stages(), config, wanted=["export"])}
    assert reports["export"] == "ran" and reports["mix"] == "skipped"
    stage = verify_stage(out / "export")
    assert set(stage["exports_by_variant"]) == {"expert-code", "expert-prose", "stitch"}
    mc = _megatron()
    for v in mixture_variants(out / "mix" / "mixture.json"):
        folder = out / "export" / v.name / "megatron"
        verify_stage(folder)
        summary = read_manifest(folder)["export"]
        plan = load_plan(v.pack_dir, v.mixture_path)
        assert summary["plan"] == plan.to_dict()
        for source, prefix in summary["prefixes"].items():
            assert prefix.startswith(str(folder))
            ds = mc.IndexedDataset(prefix)
            assert np.array_equal(np.stack([ds[i] for i in range(len(ds))]), read_windows(v.pack_dir, source))
        blend = (folder / "data_path.txt").read_text().split()
        weights = {Path(p).name.removesuffix("_text_document"): float(w) for w, p in zip(blend[0::2], blend[1::2])}
        assert weights == pytest.approx(summary["weights"], rel=1e-5)
        if v.kind == "stitch":
            assert sorted(weights) == ["code", "web"]  # books is in no expert domain
        else:
            assert sorted(weights) == ["books", "code", "web"]
