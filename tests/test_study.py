"""The study stage end to end on the full run's fixture folders (read-only: the study writes to its
own out folder, its inputs are pinned to the full run's through ``overrides``), and its resume after
a kill: a run killed after k of n proxy runs trains only the n - k missing ones on the rerun. The
2-seed study the first three tests check is the one that resume ends with (killed, resumed, grown
from 1 seed to 2), so the module trains 4 proxy runs, not 8."""

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

pytestmark = [pytest.mark.timeout(900)]  # the full_run fixture builds every stage once (in process)

INPUTS = ("ingest", "count", "embed", "knn", "dedup", "order", "pack", "utility")
STUDY = {"candidates": [{"name": "unimax", "method": "unimax"}, {"name": "prop", "method": "proportional"}],
         "orders": ["icp"], "seeds": 2, "budget_tokens": 4096,
         "proxy": {"depth": 1, "batch_size": 2, "steps": 2, "log_interval": 1},
         "holdout_docs": 3, "eval_examples": 2, "eval_windows": 2}


def study_context(full_run, out: Path, **study) -> StageContext:
    config = full_run.config_for(out, train=None, export=None, study={**STUDY, **study})
    return StageContext(config=config, out=out, overrides={n: full_run.out / n for n in INPUTS})


@pytest.fixture(scope="module")
def study(resumed):
    """The study with 2 seeds (4 proxy runs) that ``resumed`` ends with: the killed, resumed and
    grown study, so the 4 runs these tests check are trained once in the module."""
    return resumed.study


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


def _runs(out: Path) -> list[Path]:
    return sorted((next((out / "study.work").iterdir()) / "runs").glob("*/result.json"))


@pytest.fixture(scope="module")
def resumed(full_run, tmp_path_factory):
    """The study killed after the 1st of 2 proxy runs (seeds 1; ``os._exit`` in a subprocess), re-run
    (only the missing run trains), then grown to seeds 2 (only the 2 new runs train): what each step
    left, for test_study_resumes_after_a_kill, and the finished 2-seed study (``study``)."""
    out = tmp_path_factory.mktemp("study") / "run"
    out.mkdir()
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), inputs=INPUTS)
    env = {**os.environ, "MIXWEAVE_FAULT": "study:run-1"}  # os._exit after the 1st proxy run is committed
    one_seed = {**STUDY, "seeds": 1}  # 2 runs: 1 before the kill, 1 after
    r = types.SimpleNamespace(out=out)
    r.proc = subprocess.run([sys.executable, "-c", script, str(out), str(full_run.out), json.dumps(one_seed)], env=env,
                            capture_output=True, text=True, timeout=600)
    r.manifest_after_kill = read_manifest(out / "study")
    r.killed = _runs(out)
    r.killed_mtimes = {p: p.stat().st_mtime_ns for p in r.killed}
    r.rerun = run_stage(build_stages()["study"], study_context(full_run, out, seeds=1))
    r.after = _runs(out)
    r.after_mtimes = {p: p.stat().st_mtime_ns for p in r.after}  # read before the growth below
    r.killed_mtimes_after_rerun = {p: p.stat().st_mtime_ns for p in r.killed}
    r.n_runs_after_rerun = read_manifest(out / "study")["counts"]["n_runs"]
    r.tmp_left = list((out / "study.work").glob("*/runs/.*tmp-*"))
    # a second seed: the finished runs are kept (same work folder), only the 2 new ones train
    ctx = study_context(full_run, out, seeds=2)
    r.grow = run_stage(build_stages()["study"], ctx)
    r.grown = _runs(out)
    r.after_mtimes_after_grow = {p: p.stat().st_mtime_ns for p in r.after}
    r.stage_runs = sorted(p.name for p in (out / "study" / "runs").iterdir())
    r.study = types.SimpleNamespace(out=out, ctx=ctx, report=r.grow, folder=out / "study",
                                    doc=json.loads((out / "study" / "study.json").read_text()))
    return r


def test_study_resumes_after_a_kill(resumed):
    r = resumed
    assert r.proc.returncode == 77, r.proc.stderr[-2000:]
    assert r.manifest_after_kill is None  # the stage did not finish
    runs = r.killed
    assert len(runs) == 1 and runs[0].parent.name.startswith("unimax-") and runs[0].parent.name.endswith("__icp__s0")
    assert r.rerun.status == "ran"
    assert len(r.after) == 2 and r.killed_mtimes_after_rerun == r.killed_mtimes  # only the missing one ran
    assert r.n_runs_after_rerun == 2
    assert not r.tmp_left
    # a second seed: the finished runs are kept (same work folder), only the 2 new ones train
    assert r.grow.status == "ran"
    assert len(r.grown) == 4 and r.after_mtimes_after_grow == r.after_mtimes
    assert r.stage_runs == ["prop__icp__s0", "prop__icp__s1", "unimax__icp__s0", "unimax__icp__s1"]
