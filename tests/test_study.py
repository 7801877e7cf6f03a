"""The study stage end to end on the full run's fixture folders (read-only: the study writes to its
own out folder, its inputs are pinned to the full run's through ``overrides``), and its resume after
a kill: a run killed after k of n proxy runs trains only the n - k missing ones on the rerun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mixweave.data.manifest import read_manifest
from mixweave.pipeline.runner import StageContext, run_stage
from mixweave.pipeline.stages import build_stages
from mixweave.pipeline.study_stats import paired_bootstrap

pytestmark = [pytest.mark.spark, pytest.mark.timeout(900)]  # the full_run fixture builds every stage once

INPUTS = ("ingest", "count", "embed", "knn", "dedup", "order", "pack", "utility")
STUDY = {"candidates": [{"name": "unimax", "method": "unimax"}, {"name": "prop", "method": "proportional"}],
         "orders": ["icp"], "seeds": 2, "budget_tokens": 4096,
         "proxy": {"depth": 1, "batch_size": 2, "steps": 2, "log_interval": 1},
         "holdout_docs": 3, "eval_examples": 2, "eval_windows": 2}


def study_context(full_run, out: Path, **study) -> StageContext:
    config = full_run.config_for(out, train=None, export=None, study={**STUDY, **study})
    return StageContext(config=config, out=out, overrides={n: full_run.out / n for n in INPUTS})


@pytest.fixture(scope="module")
def study(full_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "run"
    out.mkdir()
    ctx = study_context(full_run, out)
    report = run_stage(build_stages()["study"], ctx)
    return types.SimpleNamespace(out=out, ctx=ctx, report=report, folder=out / "study",
                                 doc=json.loads((out / "study" / "study.json").read_text()))


def test_study_writes_rows_stats_and_charts(study, full_run):
    assert study.report.status == "ran" and read_manifest(study.folder)["counts"]["n_runs"] == 4
    rows = pq.read_table(study.folder / "study.parquet").to_pylist()
    metrics = sorted({r["metric"] for r in rows})
    assert len(rows) == 2 * 1 * 2 * len(metrics)  # candidate x order x seed x metric
    sources = sorted(read_manifest(full_run.out / "pack")["windows"]["sources"])
    assert {f"heldout_loss/{s}" for s in sources} <= set(metrics)
    assert {"bpb/mmlu", "bpb/gsm8k", "acc/mmlu", "acc/arc_easy", "bpb/mean", "acc/mean"} <= set(metrics)
    assert not any(m.startswith("acc/") and m.split("/")[1] in ("gsm8k", "humaneval", "mbpp") for m in metrics)
    assert all(np.isfinite(r["value"]) for r in rows)
    # paired results = the bootstrap recomputed from the parquet's values (same seed = a pair)
    value = {(r["candidate"], r["seed"], r["metric"]): r["value"] for r in rows}
    for p in study.doc["paired"]:
        assert p["candidate"] == "prop" and p["baseline"] == "unimax"
        again = paired_bootstrap([value["prop", s, p["metric"]] for s in (0, 1)],
                                 [value["unimax", s, p["metric"]] for s in (0, 1)], alpha=0.05, n_boot=2000)
        assert (p["diff"], p["lo"], p["hi"]) == pytest.approx((again["diff"], again["lo"], again["hi"]))
    assert "intervals are wide" in study.doc["note"]
    for r in study.doc["runs"]:  # FLOPs = 6 x params x tokens, 2 steps x 2 windows x 255 predicted tokens
        assert r["tokens"] == 2 * 2 * 255 and r["flops"] == 6.0 * r["params"] * r["tokens"]
    assert study.doc["flops"]["total"] == pytest.approx(sum(r["flops"] for r in study.doc["runs"]))
    for png in ("study_means.png", "study_paired.png"):
        assert (study.folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_candidates_are_what_mix_writes_and_data_is_shared(study, tmp_path):
    from mixweave.pipeline.stages.mix import solve_and_write_mixture
    from mixweave.pipeline.study import pack_stats

    held = json.loads((study.folder / "packs" / "holdout.json").read_text())
    for name, h in held.items():
        assert h["n_train_docs"] + h["n_holdout_docs"] == h["n_kept"] and h["n_holdout_docs"] == 3
    icp = read_manifest(study.folder / "packs" / "icp")["windows"]["sources"]
    rnd = read_manifest(study.folder / "packs" / "random")["windows"]["sources"]
    assert {n: s["n_windows"] for n, s in icp.items()} == {n: s["n_windows"] for n, s in rnd.items()}
    work = next((study.out / "study.work").iterdir())
    stats = pack_stats(study.ctx, work, held)
    for cand in ("unimax", "prop"):
        ours = json.loads((study.folder / "mixtures" / cand / "mixture.json").read_text())
        method = "unimax" if cand == "unimax" else "proportional"
        mix = solve_and_write_mixture(tmp_path / cand, stats, method=method, budget_tokens=4096,
                                      max_epochs=study.ctx.config.mix.max_epochs, seq_len=256)
        assert {s["name"]: s["weight"] for s in ours["sources"]} == pytest.approx(
            {s["name"]: s["weight"] for s in mix["sources"]})
    # same seed, same model init: the two candidates' proxies start from the same parameters
    runs = {(r["candidate"], r["seed"]): r for r in study.doc["runs"]}
    assert runs["unimax", 0]["params"] == runs["prop", 0]["params"]


def test_report_and_rerun(study):
    from mixweave.pipeline.report import build_report
    from mixweave.pipeline.study import study_section

    section = study_section(study.out)
    assert "Study: 2 candidates" in section and "prop" in section and "data:image/png;base64" in section
    assert "Study: 2 candidates" in build_report(study.out)
    assert study_section(study.out / "nowhere") is None
    assert run_stage(build_stages()["study"], study.ctx).status == "skipped"


KILL_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from conftest import full_config
from mixweave.pipeline.runner import StageContext, run_stage
from mixweave.pipeline.stages import build_stages
out, full, study = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
config = full_config(out, train=None, export=None, study=study)
ctx = StageContext(config=config, out=out, overrides={{n: full / n for n in {inputs!r}}})
run_stage(build_stages()["study"], ctx)
"""


def test_study_resumes_after_a_kill(full_run, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), inputs=INPUTS)
    env = {**os.environ, "MIXWEAVE_FAULT": "study:run-1"}  # os._exit after the 1st proxy run is committed
    study = {**STUDY, "seeds": 1}  # 2 runs: 1 before the kill, 1 after
    proc = subprocess.run([sys.executable, "-c", script, str(out), str(full_run.out), json.dumps(study)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 77, proc.stderr[-2000:]
    assert read_manifest(out / "study") is None  # the stage did not finish
    runs = sorted((next((out / "study.work").iterdir()) / "runs").glob("*/result.json"))
    assert len(runs) == 1 and runs[0].parent.name.startswith("unimax-") and runs[0].parent.name.endswith("__icp__s0")
    before = {p: p.stat().st_mtime_ns for p in runs}
    ctx = study_context(full_run, out, seeds=1)
    assert run_stage(build_stages()["study"], ctx).status == "ran"
    after = sorted((next((out / "study.work").iterdir()) / "runs").glob("*/result.json"))
    assert len(after) == 2 and {p: p.stat().st_mtime_ns for p in runs} == before  # only the missing one ran
    assert read_manifest(out / "study")["counts"]["n_runs"] == 2
    assert not list((out / "study.work").glob("*/runs/.*tmp-*"))
    # a second seed: the finished runs are kept (same work folder), only the 2 new ones train
    before = {p: p.stat().st_mtime_ns for p in after}
    assert run_stage(build_stages()["study"], study_context(full_run, out, seeds=2)).status == "ran"
    grown = sorted((next((out / "study.work").iterdir()) / "runs").glob("*/result.json"))
    assert len(grown) == 4 and {p: p.stat().st_mtime_ns for p in after} == before
    assert sorted(p.name for p in (out / "study" / "runs").iterdir()) == [
        "prop__icp__s0", "prop__icp__s1", "unimax__icp__s0", "unimax__icp__s1"]
