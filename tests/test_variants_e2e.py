"""Issue 14's done-when through the real pipeline: ``mixweave run`` of a small config with
sequence-length phases, an attention-sink token and skill tags (UtiliMax over a small utility table
with a target skill composition), copied from the small reference run so only pack, mix, export,
train and the report run -> every phase exported in every format and read by the trainers' own
libraries (sink at position 0 of every window), the built-in trainer trained through the phases,
the skill weights in mixture.json, and the report's Variants section."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from mixweave.data.mixture_manifest import mixture_variants
from mixweave.data.windows import read_windows, windows_info
from test_variants import read_realised, read_token_exact

pytestmark = [pytest.mark.timeout(900),
              pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")]

PHASES = [{"name": "short", "share": 0.6},
          {"name": "long", "share": 0.4, "seq_len": 256, "long_docs": {"min_tokens": 300, "upsample": 2}}]


@pytest.fixture(scope="module")
def phased_cli_run(small_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("variants_e2e") / "run"
    shutil.copytree(small_runs.reference, out)
    data = small_runs.config_data(out, small_runs.globs)
    utility = out.parent / "utility.csv"  # wide form: sources x benchmarks (skills: knowledge, math, code)
    utility.write_text("source,mmlu,gsm8k,humaneval\nbooks,0.6,0.2,0.1\ncode,0.2,0.3,0.8\nweb,0.5,0.4,0.2\n")
    data["order"] = {**data["order"], "sink_token": "<|sink|>"}
    data["mix"] = {**data["mix"], "method": "utilimax", "utility": str(utility), "phases": PHASES,
                   "params": {"target_skills": {"knowledge": 0.5, "math": 0.25, "code": 0.25}}}
    data["export"] = {"formats": ["all"]}
    data["train"] = {"depth": 1, "steps": 3, "batch_size": 1, "log_interval": 1, "holdout_windows": 1}
    config = out.parent / "phased.yaml"
    config.write_text(yaml.safe_dump(data))
    from mixweave.cli import main

    try:
        main(["run", str(config)])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    assert code == 0
    return out, config


def test_phased_run_exports_every_phase_read_by_the_trainers_libraries(phased_cli_run, tmp_path):
    from mixweave.data.manifest import read_manifest, verify_stage
    from mixweave.trainer.plan import load_plan

    out, _ = phased_cli_run
    variants = mixture_variants(out / "mix" / "mixture.json")
    assert [(v.name, v.kind, v.seq_len) for v in variants] == [("short", "phase", 128), ("long", "phase", 256)]
    assert variants[0].pack_dir == out / "pack" and variants[1].pack_dir == out / "pack" / "phases" / "long"
    for v in variants:  # each phase is solved by UtiliMax with the target skill composition, recorded
        method = json.loads(v.mixture_path.read_text())["method"]
        assert method["name"] == "utilimax" and method["params"]["target_skills"] == {"knowledge": 0.5, "math": 0.25,
                                                                                      "code": 0.25}
        assert method["params"]["benchmark_skills"] == {"mmlu": "knowledge", "gsm8k": "math", "humaneval": "code"}
        assert set(method["params"]["skill_weights"]) == {"mmlu", "gsm8k", "humaneval"}
    stage = verify_stage(out / "export")
    assert set(stage["exports_by_variant"]) == {"short", "long"}
    for v in variants:  # the short phase's per-source files are the main pack's windows: its draws are what differ
        info = windows_info(v.pack_dir)
        windows = {n: read_windows(v.pack_dir, n) for n in info.sources}
        assert info.sink_id == 50257 and all((w[:, 0] == 50257).all() for w in windows.values())
        if v.pack_dir != out / "pack":
            read_token_exact(out / "export" / v.name, v.seq_len, windows, tmp_path / v.name / "exact")
        read_realised(out / "export" / v.name, load_plan(v.pack_dir, v.mixture_path), windows,
                      tmp_path / v.name / "mix")
    train = read_manifest(out / "train")["train"]
    assert [(p["name"], p["seq_len"], p["steps"]) for p in train["phases"]] == [("short", 128, 2), ("long", 256, 1)]
    assert train["finished"] and train["last_step"] == 3
    metrics = [json.loads(x) for x in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [m["phase"] for m in metrics if "loss" in m] == ["short", "short", "long"]
    report = (out / "report.html").read_text()
    assert "<h2>Variants</h2>" in report and "export/long/ (datatrove, hf, mds, megatron, olmo)" in report


def test_export_cli_with_config_names_the_variant_folders(phased_cli_run, capsys):
    from cli_helpers import run_cli

    out, config = phased_cli_run
    code, stdout, err = run_cli(["export", "--config", str(config), "--variant", "long"], capsys)
    assert code == 0, err
    assert f"phase long (seq_len 256): {out / 'export' / 'long'}/<format>" in stdout and "short" not in stdout
    code, stdout, err = run_cli(["export", "--config", str(config), "--variant", "mid"], capsys)
    assert code != 0 and "no variant 'mid'" in err and "short, long" in err
