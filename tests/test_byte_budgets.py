"""Byte budgets (Byte Latent Transformer): mix.unit bytes solves every method over byte sizes,
mixture.json states both units, the trainer plan still meets the tokens, the count stage measures
bytes per token, and a bad unit is one ConfigError line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mixweave.data.mixture_manifest import manifest_problems, read_mixture_manifest
from mixweave.data.typed import from_dict
from mixweave.data.windows import WindowsInfo
from mixweave.errors import ConfigError
from mixweave.mixers import solve
from mixweave.mixers.config import MixConfig
from mixweave.pipeline.stages.mix import solve_and_write_mixture
from mixweave.trainer.plan import plan_windows

TOKENIZER = {"name": "gpt2", "path": "gpt2", "sha256": "0" * 64, "vocab_size": 50257, "eos_id": 50256,
             "dtype": "uint16"}
# sizes chosen so that the byte ranking differs from the token ranking (c: fewest tokens, most bytes)
SOURCES = {"a": (4096, 2.0), "b": (16384, 4.5), "c": (2048, 40.0), "d": (65536, 3.0)}
UTILITY = {"a": {"q1": 0.2, "q2": 0.9, "q3": 0.1}, "b": {"q1": 0.8, "q2": 0.1, "q3": 0.3},
           "c": {"q1": 0.5, "q2": 0.5, "q3": 0.9}, "d": {"q1": 0.3, "q2": 0.2, "q3": 0.2}}


def _stats(sources=SOURCES) -> dict:
    return {"schema_version": 1, "tokenizer": TOKENIZER,
            "sources": {n: {"n_docs": 5, "n_tokens": t, "n_bytes": int(t * r), "bytes_per_token": r, "paths": []}
                        for n, (t, r) in sources.items()}}


def _unimax_loop(sizes: dict[str, float], budget: float, cap: float) -> dict[str, float]:
    """The published UniMax loop, one source at a time in ascending size (brute-force reference)."""
    out, left = {}, budget
    ordered = sorted(sizes, key=sizes.get)
    for i, name in enumerate(ordered):
        out[name] = min(left / (len(ordered) - i), cap * sizes[name])
        left -= out[name]
    total = sum(out.values())
    return {n: v / total for n, v in out.items()}


@pytest.mark.parametrize("budget_bytes", [150_000.0, 400_000.0, 0.0])
def test_unimax_byte_budget_equals_the_loop_over_byte_sizes(tmp_path, budget_bytes):
    m = solve_and_write_mixture(tmp_path / "m", _stats(), method="unimax", budget_tokens=0,
                                budget_bytes=budget_bytes, unit="bytes", max_epochs=2.0)
    sizes = {n: t * r for n, (t, r) in SOURCES.items()}
    budget = budget_bytes or sum(sizes.values())
    want = _unimax_loop(sizes, budget, 2.0)
    got_bytes = {s["name"]: s["target_bytes"] / m["budget_bytes"] for s in m["sources"]}
    assert m["unit"] == "bytes" and m["budget_bytes"] == pytest.approx(budget)
    assert got_bytes == pytest.approx(want, abs=1e-12)
    # the same loop over token sizes gives different weights: the unit matters here
    tokens = _unimax_loop({n: float(t) for n, (t, _) in SOURCES.items()}, budget / 3.0, 2.0)
    assert max(abs(tokens[n] - want[n]) for n in want) > 0.01
    for s in m["sources"]:  # epochs are unit-free
        assert s["epochs"] == pytest.approx(s["target_bytes"] / s["n_bytes"]) and s["epochs"] <= 2.0 + 1e-9


@pytest.mark.parametrize("method,params", [("utilimax", {"lam": 0.1}), ("weakest_link", {"lam": 0.1}),
                                           ("temperature", {"tau": 2.0}), ("proportional", {})])
def test_every_method_solves_its_program_over_byte_sizes(tmp_path, method, params):
    import pandas as pd

    budget, caps = 200_000.0, (3.0 if method != "proportional" else None)
    utility = None
    if "lam" in params:
        utility = tmp_path / "utility.csv"
        pd.DataFrame(UTILITY).T.rename_axis("source").reset_index().to_csv(utility, index=False)
    m = solve_and_write_mixture(tmp_path / method, _stats(), method=method, budget_tokens=0, budget_bytes=budget,
                                unit="bytes", max_epochs=caps, params=params, utility_path=utility)
    ref = solve({n: t * r for n, (t, r) in SOURCES.items()}, budget, method, max_epochs=caps,
                **params, **({"utility": UTILITY} if utility else {}))
    got = {s["name"]: s["target_bytes"] / m["budget_bytes"] for s in m["sources"]}
    assert got == pytest.approx(dict(ref.weights), abs=1e-6)
    tokens = {s["name"]: s["weight"] for s in m["sources"]}  # the token shares differ from the byte shares
    assert max(abs(tokens[n] - got[n]) for n in got) > 1e-3


def test_mixture_json_carries_both_units_and_they_agree(tmp_path):
    for unit, kw in (("tokens", {"budget_tokens": 60_000}), ("bytes", {"budget_tokens": 0, "budget_bytes": 2e5})):
        m = solve_and_write_mixture(tmp_path / unit, _stats(), method="unimax", max_epochs=2.0, unit=unit, **kw)
        read = read_mixture_manifest(tmp_path / unit / "mixture.json")
        assert read == m and read["unit"] == unit
        rates = {n: r for n, (_, r) in SOURCES.items()}
        for s in read["sources"]:
            assert s["bytes_per_token"] == rates[s["name"]]
            assert s["target_bytes"] == pytest.approx(s["target_tokens"] * rates[s["name"]], rel=1e-12)
            assert s["n_bytes"] == pytest.approx(s["n_tokens"] * rates[s["name"]], rel=1e-12)
            assert s["weight"] == pytest.approx(s["target_tokens"] / read["budget_tokens"], rel=1e-9)
        assert read["budget_bytes"] == pytest.approx(sum(s["target_bytes"] for s in read["sources"]), rel=1e-9)
        assert read["budget_tokens"] == pytest.approx(sum(s["target_tokens"] for s in read["sources"]), rel=1e-9)
    assert read["budget_bytes"] == 200_000
    bad = json.loads((tmp_path / "bytes" / "mixture.json").read_text())
    bad["sources"][0]["target_bytes"] *= 1.01
    assert any("target_bytes" in p for p in manifest_problems(bad))
    bad = json.loads((tmp_path / "bytes" / "mixture.json").read_text())
    del bad["sources"][1]["bytes_per_token"]
    assert manifest_problems(bad)


def test_trainer_plan_meets_the_tokens_of_a_byte_mixture(tmp_path):
    S = 128
    m = solve_and_write_mixture(tmp_path / "m", _stats(), method="unimax", budget_tokens=0, budget_bytes=3e5,
                                unit="bytes", max_epochs=2.0, seq_len=S)
    info = WindowsInfo(S, False, TOKENIZER, {n: {"n_windows": t // S} for n, (t, _) in SOURCES.items()})
    plan = plan_windows(m, info)
    assert sum(p.target_windows for p in plan.sources) == round(m["budget_tokens"] / S)
    for p, s in zip(plan.sources, m["sources"]):
        assert abs(p.realized_tokens(S) - s["target_tokens"]) < S  # each source within one window of its tokens
        assert p.target_windows <= 2.0 * p.n_windows


@pytest.mark.parametrize("mix,match", [({"unit": "words"}, "mix.unit"),
                                       ({"budget_bytes": 1e6}, "budget_bytes is for mix.unit: bytes"),
                                       ({"unit": "bytes", "budget_tokens": 1e6}, "budget_bytes, not budget_tokens"),
                                       ({"unit": "bytes", "budget_bytes": 0.5}, "at least 1 byte")])
def test_bad_unit_or_budget_is_one_config_error_line(mix, match):
    with pytest.raises(ConfigError, match=match) as err:
        from_dict(MixConfig, mix, "mix")
    assert "\n" not in str(err.value)


def test_bad_unit_in_the_solver_is_one_config_error_line(tmp_path):
    with pytest.raises(ConfigError, match="mix.unit 'kilobytes'") as err:
        solve_and_write_mixture(tmp_path / "m", _stats(), method="unimax", budget_tokens=0, max_epochs=2.0,
                                unit="kilobytes")
    assert "\n" not in str(err.value) and not (tmp_path / "m").exists()


def test_count_stage_records_bytes_per_token(tmp_path):
    from mixweave.pipeline.stages.count import run_count_stage

    ingest = tmp_path / "ingest"
    ingest.mkdir()
    entry = {"paths": ["x.jsonl"], "n_docs": 3, "n_bytes": 1000, "n_quarantined": 0, "quarantine_reasons": {},
             "length_histogram": {}, "files": []}
    manifest = {"stage": "ingest", "files": [], "tokenizer": TOKENIZER,
                "sources": {"a": {**entry, "n_tokens": 250}, "b": {**entry, "n_tokens": 400, "n_bytes": 1400},
                            "empty": {**entry, "n_docs": 0, "n_tokens": 0, "n_bytes": 0}}}
    (ingest / "_manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "count"
    out.mkdir()
    run_count_stage(SimpleNamespace(artifact=lambda stage: tmp_path / stage), out)
    stats = json.loads((out / "stats.json").read_text())
    assert {n: s["bytes_per_token"] for n, s in stats["sources"].items()} == {"a": 4.0, "b": 3.5, "empty": None}


def test_a_packed_source_counts_its_window_tokens_times_its_ingest_bytes_per_token(tmp_path):
    """With a pack, mix solves over window tokens x the ingest rate (dedup and the dropped tail change
    the tokens, not the text's bytes per token); a stats.json from before the field gets the rate
    from n_bytes / n_tokens before n_tokens is replaced."""
    from mixweave.data.manifest import list_output_files
    from mixweave.pipeline.stages.mix import mix_stats

    count, pack = tmp_path / "count", tmp_path / "pack"
    count.mkdir()
    pack.mkdir()
    stats = _stats()
    del stats["sources"]["a"]["bytes_per_token"]  # an old stats.json: n_bytes / n_tokens = 2.0
    (count / "stats.json").write_text(json.dumps(stats))
    (count / "_manifest.json").write_text(json.dumps({"stage": "count", "files": list_output_files(count)}))
    windows = {n: {"n_windows": t // 256, "n_tokens": (t // 256) * 128, "n_docs": 4} for n, (t, _) in SOURCES.items()}
    (pack / "_manifest.json").write_text(json.dumps({"stage": "pack", "files": [], "windows": {
        "seq_len": 128, "plus_one": False, "tokenizer": TOKENIZER, "sources": windows}}))
    ctx = SimpleNamespace(config=SimpleNamespace(order=object()), artifact=lambda stage: tmp_path / stage)
    packed, order, window, seq_len = mix_stats(ctx)
    m = solve_and_write_mixture(tmp_path / "mix", packed, method="unimax", budget_tokens=0, budget_bytes=0,
                                unit="bytes", max_epochs=2.0, seq_len=seq_len, order=order, window=window)
    for s in m["sources"]:
        rate = SOURCES[s["name"]][1]
        assert s["n_tokens"] == windows[s["name"]]["n_tokens"] and s["bytes_per_token"] == pytest.approx(rate)
        assert s["n_bytes"] == pytest.approx(windows[s["name"]]["n_tokens"] * rate)
    assert m["budget_bytes"] == pytest.approx(sum(w["n_tokens"] * SOURCES[n][1] for n, w in windows.items()))


def test_mix_cli_with_stats_solves_a_byte_budget(tmp_path, capsys):
    """``mixweave mix --stats ... --unit bytes --budget-bytes B`` = the solver over byte sizes; a byte
    budget without ``--unit bytes`` is one line and exit 2."""
    from tests.cli_helpers import run_cli

    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps(_stats()))
    code, out, err = run_cli(["mix", "--stats", str(stats), "--method", "unimax", "--unit", "bytes",
                              "--budget-bytes", "400000", "--max-epochs", "2", "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    m = read_mixture_manifest(tmp_path / "m" / "mixture.json")
    assert m["unit"] == "bytes" and m["budget_bytes"] == 400000
    byte_sizes = {n: t * r for n, (t, r) in SOURCES.items()}
    expected = _unimax_loop(byte_sizes, 400_000.0, 2.0)
    weights = {s["name"]: s["target_bytes"] / m["budget_bytes"] for s in m["sources"]}
    assert weights == pytest.approx(expected, rel=1e-6)
    code, out, err = run_cli(["mix", "--stats", str(stats), "--method", "unimax", "--budget-bytes", "400000",
                              "--out", str(tmp_path / "n")], capsys)
    assert code == 2 and "--unit bytes" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
