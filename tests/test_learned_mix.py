"""DoReMi / RegMix wired as mixing methods: typed params and the load-time check for a pack, the
epoch capping of learned weights, ``solve_and_write_mixture`` with a pack (mixture.json's learned
block, proxies/ folders), and the mix stage itself run on a tiny real pack (fingerprint includes the
learned params; same config -> same weights)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mixweave.errors import ConfigError, InfeasibleError
from mixweave.mixers.learned import feasible_under_caps

S = 32
TINY_DOREMI = {"depth": 1, "steps": 4, "batch_size": 4, "reference_steps": 3}
TINY_REGMIX = {"depth": 1, "steps": 3, "batch_size": 4, "n_proxies": 3, "n_simulate": 2000, "top_k": 16}


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tests/conftest.py


def _stats(tiny_sample) -> dict:
    from mixweave.data.windows import windows_info

    info = windows_info(tiny_sample.pack_dir)
    return {"schema_version": 1, "tokenizer": dict(info.tokenizer),
            "sources": {n: {"n_tokens": t, "n_docs": 10, "n_bytes": 4 * t, "paths": [n]}
                        for n, t in sorted(tiny_sample.tokens.items())}}


# -- config -----------------------------------------------------------------------------------------------


def _run_data(tmp_path, tiny_sample, method="doremi", params=None, order=True) -> dict:
    data = {"out": str(tmp_path / "run"), "seed": 2, "benchmarks": str(tiny_sample.benchmarks_path),
            "sources": {n: {"paths": [str(tmp_path / n / "*.jsonl")]} for n in sorted(tiny_sample.tokens)},
            "mix": {"method": method, "max_epochs": 4, "params": params or {}}}
    if order:
        data["order"] = {"k": 4, "seq_len": S, "max_tokens": 32}
    return data


def test_config_types_the_learned_params_and_asks_for_a_pack(tiny_sample, tmp_path):
    from mixweave.mixers.params import DoReMiParams, RegMixParams
    from mixweave.pipeline.config import parse_config

    cfg = parse_config(_run_data(tmp_path, tiny_sample, "doremi", {"eta": 0.5, "reference": "uniform"}))
    assert isinstance(cfg.mix.params, DoReMiParams) and cfg.mix.params.eta == 0.5
    cfg = parse_config(_run_data(tmp_path, tiny_sample, "regmix", {"n_proxies": 8, "regressor": "gbm"}))
    assert isinstance(cfg.mix.params, RegMixParams) and cfg.mix.params.regressor == "gbm"
    with pytest.raises(ConfigError, match="add an order section"):
        parse_config(_run_data(tmp_path, tiny_sample, "doremi", order=False))
    for method, params, match in [("doremi", {"eta": 0}, "eta must be > 0"),
                                  ("doremi", {"reference": "proportional"}, "not allowed"),
                                  ("doremi", {"n_proxies": 3}, "n_proxies"),
                                  ("regmix", {"n_proxies": 1}, "n_proxies must be an integer >= 2"),
                                  ("regmix", {"target": "bench"}, "use auto, benchmarks"),
                                  ("regmix", {"regressor": "lightgbm"}, "not allowed"),
                                  ("regmix", {"steps": 0}, "steps must be an integer >= 1")]:
        with pytest.raises(ConfigError, match=match):
            parse_config(_run_data(tmp_path, tiny_sample, method, params))


# -- capping ----------------------------------------------------------------------------------------------


def test_learned_weights_are_water_filled_under_the_caps():
    inf = np.inf
    np.testing.assert_allclose(feasible_under_caps(np.array([0.7, 0.3, 0.0]), np.array([0.5, inf, inf])),
                               [0.5, 0.5, 0.0])  # the excess goes to the uncapped source, zero stays zero
    np.testing.assert_allclose(feasible_under_caps(np.array([0.6, 0.2, 0.2]), np.array([0.3, 1.0, 1.0])),
                               [0.3, 0.35, 0.35])  # ratios of the uncapped sources kept
    np.testing.assert_allclose(feasible_under_caps(np.array([0.7, 0.3, 0.0]), np.array([0.5, 0.2, 0.9])),
                               [0.5, 0.2, 0.3])  # the positive sources cannot absorb it all: the zero one fills
    np.testing.assert_allclose(feasible_under_caps(np.array([0.5, 0.5]), np.array([inf, inf])), [0.5, 0.5])


def test_unusable_learned_weights_are_one_config_error():
    from mixweave.mixers.learned import check_learned

    np.testing.assert_allclose(check_learned(np.array([1.0, 3.0]), "doremi"), [0.25, 0.75])
    for bad in ([np.nan, 1.0], [0.0, 0.0], [-0.1, 1.1]):
        with pytest.raises(ConfigError, match="lower mix.params.lr"):
            check_learned(np.array(bad), "doremi")


def test_solve_caps_the_learned_weights_and_needs_them():
    from mixweave.mixers import solve

    m = solve({"a": 100, "b": 900}, 1000, "doremi", max_epochs=2.0, learned_weights={"a": 0.5, "b": 0.5}, eta=1.0)
    assert m.weights["a"] == pytest.approx(0.2) and m.weights["b"] == pytest.approx(0.8)  # a: 2 epochs of 100
    assert m.binding["a"] == "epoch_cap" and m.params["eta"] == 1.0 and "learned_weights" not in m.params
    m = solve({"a": 100, "b": 900}, 1000, "regmix", learned_weights={"a": 0.1, "b": 0.9})
    assert m.params["max_epochs"] == 4.0  # capped by definition: the default cap applies
    with pytest.raises(ConfigError, match="proxy models"):
        solve({"a": 100, "b": 900}, 1000, "regmix")
    with pytest.raises(ConfigError, match="does not take"):
        solve({"a": 100, "b": 900}, 1000, "doremi", learned_weights={"a": 1, "b": 1}, tau=2)


# -- solve_and_write_mixture ------------------------------------------------------------------------------


def test_solve_and_write_mixture_records_the_learned_block(tiny_sample, tmp_path):
    from mixweave.data.mixture_manifest import read_mixture_manifest
    from mixweave.pipeline.stages.mix import solve_and_write_mixture

    stats = _stats(tiny_sample)
    total = sum(tiny_sample.tokens.values())
    folder = tmp_path / "doremi"
    manifest = solve_and_write_mixture(folder, stats, method="doremi", budget_tokens=3 * total, max_epochs=3.2,
                                       params=TINY_DOREMI, seq_len=S, seed=1, pack_dir=tiny_sample.pack_dir)
    assert read_mixture_manifest(folder / "mixture.json") == manifest
    learned = manifest["learned"]
    assert learned["method"] == "doremi" and learned["proxies_folder"] == "proxies"
    assert (folder / "proxies" / "reference" / "eval.json").is_file()
    assert (folder / "proxies" / "proxy" / "domain_weights.jsonl").is_file()
    assert not (folder / "proxies" / "reference" / "checkpoints").exists()  # scored proxies keep no weights
    assert learned["flops"] == pytest.approx(learned["reference"]["flops"] + learned["proxy"]["flops"])
    names = [s["name"] for s in manifest["sources"]]
    pre = np.array([learned["weights"][n] for n in names])
    n_tok = np.array([s["n_tokens"] for s in manifest["sources"]], dtype=float)
    caps = 3.2 * n_tok / (3 * total)
    np.testing.assert_allclose([s["weight"] for s in manifest["sources"]], feasible_under_caps(pre, caps), rtol=1e-9)
    assert all(s["epochs"] <= 3.2 * (1 + 1e-9) for s in manifest["sources"])
    assert manifest["method"]["name"] == "doremi" and manifest["method"]["params"]["steps"] == 4
    assert manifest["method"]["params"]["eta"] == 1.0 and manifest["method"]["params"]["smoothing"] == 1e-3  # defaults
    assert learned["params"] == {k: v for k, v in manifest["method"]["params"].items() if k != "max_epochs"}
    # regmix through the same function, target from the benchmarks
    reg = solve_and_write_mixture(tmp_path / "regmix", stats, method="regmix", budget_tokens=0, max_epochs=4,
                                  params=TINY_REGMIX, seq_len=S, seed=1, pack_dir=tiny_sample.pack_dir,
                                  benchmarks=tiny_sample.benchmarks_path)
    assert reg["learned"]["target"] == "benchmarks" and len(reg["learned"]["proxies"]) == 3
    assert all((tmp_path / "regmix" / "proxies" / p["folder"] / "eval.json").is_file() for p in reg["learned"]["proxies"])
    # without a pack: one ConfigError line, nothing written; an impossible budget fails before training
    with pytest.raises(ConfigError, match="add an order section"):
        solve_and_write_mixture(tmp_path / "none", stats, method="doremi", budget_tokens=0, max_epochs=4)
    with pytest.raises(InfeasibleError):
        solve_and_write_mixture(tmp_path / "big", stats, method="doremi", budget_tokens=10 * total, max_epochs=2,
                                params=TINY_DOREMI, seq_len=S, pack_dir=tiny_sample.pack_dir)
    assert not (tmp_path / "none").exists() and not (tmp_path / "big").exists()


# -- the mix stage ----------------------------------------------------------------------------------------


def _count_artifact(folder: Path, stats: dict) -> Path:
    from mixweave.data.manifest import MANIFEST_NAME, build_manifest, write_json_atomic

    folder.mkdir(parents=True)
    write_json_atomic(folder / "stats.json", stats)
    write_json_atomic(folder / MANIFEST_NAME, build_manifest(stage="count", stage_version=1, config={},
                                                             fingerprint_value="test", inputs={}, root=folder))
    return folder


def test_mix_stage_runs_doremi_on_the_pack(tiny_sample, tmp_path):
    from mixweave.pipeline.config import parse_config
    from mixweave.pipeline.runner import StageContext, run_stage
    from mixweave.pipeline.stages import mix

    count = _count_artifact(tmp_path / "count", _stats(tiny_sample))
    cfg = parse_config(_run_data(tmp_path, tiny_sample, "doremi", TINY_DOREMI))
    assert mix.mix_inputs(cfg) == ("count", "pack")
    ctx = StageContext(cfg, tmp_path / "run", overrides={"count": count, "pack": tiny_sample.pack_dir})
    run_stage(mix.STAGE, ctx)
    first = json.loads((tmp_path / "run" / "mix" / "mixture.json").read_text())
    assert first["learned"]["method"] == "doremi" and (tmp_path / "run" / "mix" / "proxies" / "reference").is_dir()
    assert first["order"]["method"] == "icp"
    # same config: the stage is skipped; another eta: the fingerprint differs and it re-runs
    assert run_stage(mix.STAGE, ctx).status == "skipped"
    cfg2 = parse_config(_run_data(tmp_path, tiny_sample, "doremi", {**TINY_DOREMI, "eta": 0.1}))
    assert mix.mix_config_slice(cfg2) != mix.mix_config_slice(cfg)
    ctx2 = StageContext(cfg2, tmp_path / "run", overrides={"count": count, "pack": tiny_sample.pack_dir})
    assert run_stage(mix.STAGE, ctx2).status == "ran"
    second = json.loads((tmp_path / "run" / "mix" / "mixture.json").read_text())
    assert second["method"]["params"]["eta"] == 0.1
    # deterministic: the same config in a fresh folder gives the same weights
    ctx3 = StageContext(cfg2, tmp_path / "again", overrides={"count": count, "pack": tiny_sample.pack_dir})
    run_stage(mix.STAGE, ctx3)
    third = json.loads((tmp_path / "again" / "mix" / "mixture.json").read_text())
    assert [s["weight"] for s in third["sources"]] == [s["weight"] for s in second["sources"]]
    assert math.isclose(sum(s["weight"] for s in third["sources"]), 1.0, rel_tol=1e-9)
