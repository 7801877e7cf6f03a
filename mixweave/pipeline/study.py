"""``mixweave study``: does a recommended mixture train a better model? Proxy runs per candidate
mixture x order mode x seed on the same data, compared pairwise with a baseline.

Same data for everyone:

1. **Held-out documents.** Per source, ``holdout_docs`` of the kept documents (ingest order + dedup
   keep mask; at most a fifth of the source) are drawn with a seeded generator; no candidate trains
   on them. Their windows (packed alone) give the held-out loss per source.
2. **The study's packs** (``packs/icp``, ``packs/random``): the order stage's traversal restricted to
   the other kept documents, and a seeded random permutation of the same documents, both cut by
   :func:`mixweave.retrieval.pack.pack_windows` at the run's ``order.seq_len`` (same EOS joins, same
   window shuffle). Both hold the same tokens, so both have the same windows per source.
3. **Candidates.** Every candidate (method + params) is solved by
   :func:`mixweave.pipeline.stages.mix.solve_and_write_mixture` -- the function the mix stage uses --
   on the study pack's token counts (``mixtures/<name>/mixture.json``), once, for every order.
4. **Proxy runs.** For each candidate x order x seed: :func:`mixweave.trainer.plan.plan_windows` +
   :func:`mixweave.trainer.train.train_plan` (the :class:`~mixweave.trainer.dataset.MixtureLoader`
   sampler the exports use), model init = data order = seed, the same token budget for everyone.
   Evaluation: held-out loss per source; per benchmark bits per byte of the gold answer given the
   prompt and, for multiple-choice benchmarks, accuracy by option likelihood
   (:func:`mixweave.trainer.evaluate.answer_metrics`). Cost: 6 x params x tokens FLOPs per run.
5. **Statistics** (:mod:`mixweave.pipeline.study_stats`): mean +- t interval over seeds; paired
   differences against the baseline (same seed), a paired bootstrap interval and the sign test;
   "better" only when the interval excludes zero. Also icp - random per candidate.

Resumable: packs, mixtures and each run are committed atomically into ``<out>/study.work/<key>/``
(``key``: the inputs and every setting that changes a run, not the grid of candidates, orders and
seeds), which the runner does not clean after a failed stage; a rerun after a kill trains only the
runs that have no ``result.json``, and adding a candidate or a seed trains only the new runs. The stage folder gets copies
of packs, mixtures, per-run results (no checkpoints), ``study.parquet``, ``study.json`` and charts.
The study's packs are cut in this process (a corpus whose sources do not fit one machine needs the
Spark pack job here too).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import inspect
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data.manifest import atomic_folder, fingerprint, manifest_sha256, read_manifest, sha256_file, write_json_atomic
from ..data.typed import to_plain
from ..errors import ConfigError
from . import study_stats

LOG = logging.getLogger(__name__)

STUDY_VERSION = 1
RUN_RESULT = "result.json"
HOLDOUT_SHARE = 5  # at most 1/5 of a source's kept documents are held out


# --------------------------------------------------------------------------------------- metrics
def higher_is_better(metric: str) -> bool:
    return metric.startswith("acc/")


def metric_kind(metric: str) -> str:
    return metric.split("/", 1)[0]


# ----------------------------------------------------------------------------------- the setup
def study_inputs(config) -> tuple[str, ...]:
    inputs = ("ingest", "count", "dedup", "order", "pack")
    if utility_needed(config) and config.utility is not None and not (config.mix and config.mix.utility):
        inputs += ("utility",)
    return inputs


def utility_needed(config) -> bool:
    from ..mixers.params import method_key
    from .study_config import UTILITY_METHODS

    return any(method_key(c.method) in UTILITY_METHODS for c in config.study.candidates)


def utility_path(ctx) -> Path | None:
    c = ctx.config
    if c.mix is not None and c.mix.utility:
        return Path(c.mix.utility)
    if c.utility is not None and utility_needed(c):
        return ctx.artifact("utility") / "utility.parquet"
    return None


def study_settings(config) -> dict:
    """The config slice a study depends on (its fingerprint and its work folder's key)."""
    s, o = config.study, config.order
    return {"study": to_plain(s), "seed": config.seed, "benchmarks": config.benchmarks,
            "order": {"seq_len": o.seq_len, "plus_one": o.plus_one, "shuffle": o.shuffle, "sink_token": o.sink_token},
            "tokenizer": to_plain(config.tokenizer), "budget_tokens": budget_tokens(config),
            "max_epochs": max_epochs(config), "mix_utility": config.mix.utility if config.mix else None}


def budget_tokens(config) -> float:
    s = config.study
    if s.budget_tokens is not None:
        return float(s.budget_tokens)
    return float(config.mix.budget_tokens) if config.mix is not None else 0.0


def max_epochs(config) -> float:
    s = config.study
    if s.max_epochs is not None:
        return float(s.max_epochs)
    return float(config.mix.max_epochs) if config.mix is not None else 4.0


def study_fingerprint_extra(config) -> dict:
    """sha256 of the benchmarks file and of a given utility table."""
    out = {}
    if config.benchmarks and Path(config.benchmarks).is_file():
        out["benchmarks"] = sha256_file(config.benchmarks)
    if config.mix is not None and config.mix.utility and Path(config.mix.utility).is_file():
        out["utility"] = sha256_file(config.mix.utility)
    return out


#: study keys that only choose which runs exist or how they are compared: changing them keeps the finished runs
GRID_KEYS = ("candidates", "orders", "seeds", "baseline", "n_boot", "alpha")


def work_folder(ctx) -> Path:
    """``<out>/study.work/<key>``: one per (inputs, settings that change a run's data or training);
    other keys' folders are removed. The grid (candidates, orders, seeds) is not in the key: adding
    a candidate or a seed keeps the finished runs (each named by its candidate's method and params)."""
    inputs = {name: manifest_sha256(ctx.artifact(name)) for name in study_inputs(ctx.config)}
    settings = study_settings(ctx.config)
    settings["study"] = {k: v for k, v in settings["study"].items() if k not in GRID_KEYS}
    key = fingerprint("study-work", STUDY_VERSION, {"settings": settings,
                                                      "extra": study_fingerprint_extra(ctx.config)}, inputs)
    root = ctx.out / "study.work"
    work = root / key[:16]
    if root.is_dir():
        for other in root.iterdir():
            if other != work and other.is_dir():
                shutil.rmtree(other, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    return work


# ----------------------------------------------------------------------------------- the packs
def build_packs(ctx, work: Path) -> dict:
    """packs/{icp,random,holdout} in ``work`` (each atomic, kept when present) + holdout.json."""
    from ..data.artifacts import load_keep, load_order, read_source_texts
    from ..data.manifest import require_manifest
    from ..data.tokenizer import load_tokenizer
    from ..data.windows import write_pack_artifact
    from ..retrieval import pack_windows
    from ..retrieval.pack import source_seed

    root = work / "packs"
    names = ("icp", "random", "holdout")
    info_file = root / "holdout.json"
    if all(read_manifest(root / n) is not None for n in names) and info_file.is_file():
        return json.loads(info_file.read_text())
    c, s, o = ctx.config, ctx.config.study, ctx.config.order
    ingest_dir = ctx.artifact("ingest")
    ingest_manifest = require_manifest(ingest_dir, "ingest")
    tokenizer = load_tokenizer(c.tokenizer.path, c.tokenizer.pattern, o.sink_token)
    sink_id = tokenizer.sink_id  # the pack stage's attention-sink token (order.sink_token), or None
    if (tokenizer.base_sha256 or tokenizer.sha256) != ingest_manifest["tokenizer"]["sha256"]:
        raise ConfigError("the tokenizer changed since ingest; re-run ingest (mixweave run --force --stage ingest)")
    dtype = np.dtype(tokenizer.info["dtype"])
    sources = sorted(require_manifest(ctx.artifact("order"), "order")["order"])
    windows: dict[str, dict[str, np.ndarray]] = {n: {} for n in names}
    held_info: dict[str, Any] = {}
    for source in sources:
        keep = load_keep(ctx.artifact("dedup"), source)
        kept = np.flatnonzero(keep)
        rng = np.random.default_rng(source_seed(c.seed, f"study-holdout:{source}"))
        n_hold = min(s.holdout_docs, kept.size // HOLDOUT_SHARE)
        held = np.sort(rng.choice(kept, size=n_hold, replace=False)) if n_hold else np.zeros(0, np.int64)
        order = load_order(ctx.artifact("order"), source)
        icp = order[np.isin(order, kept) & ~np.isin(order, held)]
        random_order = np.random.default_rng(source_seed(c.seed, f"study-random:{source}")).permutation(np.sort(icp))
        texts = read_source_texts(ingest_dir, source)
        tokens = tokenizer.encode_batch([texts[i] for i in kept]) if kept.size else []
        seed = source_seed(c.seed, source)
        for name, docs, shuffle in (("icp", icp, o.shuffle), ("random", random_order, o.shuffle),
                                    ("holdout", held, True)):
            packed = pack_windows(tokens, np.searchsorted(kept, docs), seq_len=o.seq_len, eos_id=tokenizer.eos_id,
                                  plus_one=o.plus_one, shuffle=shuffle, seed=seed, dtype=dtype, sink_id=sink_id)
            windows[name][source] = packed.windows
        held_info[source] = {"n_kept": int(kept.size), "n_holdout_docs": int(held.size), "n_train_docs": int(icp.size),
                             "holdout_docs": [int(i) for i in held],
                             "n_holdout_windows": int(windows["holdout"][source].shape[0]),
                             "n_train_windows": int(windows["icp"][source].shape[0])}
    for name in names:
        write_pack_artifact(root / name, windows[name], seq_len=o.seq_len, plus_one=o.plus_one,
                            tokenizer=tokenizer.info)
    write_json_atomic(info_file, held_info)
    return held_info


def pack_stats(ctx, work: Path, held: dict) -> dict:
    """The count stage's stats with each source's tokens and docs of the study's training pack."""
    import copy

    from ..data.artifacts import load_stats
    from ..data.windows import windows_info

    stats = copy.deepcopy(load_stats(ctx.artifact("count")))
    info = windows_info(work / "packs" / "icp")
    for name, entry in stats["sources"].items():
        w = info.sources.get(name)
        if w is None or int(w["n_windows"]) == 0:
            raise ConfigError(f"study: source {name} has no training windows of {info.seq_len} tokens after holding "
                              f"out {held.get(name, {}).get('n_holdout_docs', 0)} documents; lower order.seq_len or "
                              "study.holdout_docs, or remove the source")
        entry["n_tokens"] = int(w["n_tokens"])
        entry["n_docs"] = int(held[name]["n_train_docs"])
    if info.sink_id is not None:  # as the mix stage: the pack's tokenizer (with its sink token) is the mixture's
        stats["tokenizer"] = dict(info.tokenizer)
    return stats


# ------------------------------------------------------------------------------------ mixtures
def solve_candidates(ctx, work: Path, stats: dict) -> dict[str, Path]:
    """mixtures/<candidate>/mixture.json through the mix stage's own solver (kept when present)."""
    from ..data.windows import windows_info
    from .stages.mix import solve_and_write_mixture

    c, s = ctx.config, ctx.config.study
    pack = work / "packs" / "icp"
    info = windows_info(pack)
    window = {"tokens": info.window_tokens, "doc_separator": "eos",
              "labels": "extra_token" if info.plus_one else "shift_within_window"}
    if info.sink_id is not None:
        window["sink_id"] = info.sink_id
    accepted = inspect.signature(solve_and_write_mixture).parameters
    out = {}
    for cand in s.candidates:
        final = work / "mixtures" / candidate_folder(cand)
        out[cand.name] = final / "mixture.json"
        if (final / "mixture.json").is_file():  # the same name, method and params: solved before
            continue
        final.parent.mkdir(parents=True, exist_ok=True)
        extra = {}
        if "pack_dir" in accepted:  # the learned mixers (DoReMi, RegMix) train proxies on the pack
            extra["pack_dir"] = pack
        if "benchmarks" in accepted and c.benchmarks:
            extra["benchmarks"] = c.benchmarks
        LOG.info("study: solving candidate %s (%s)", cand.name, cand.method)
        with atomic_folder(final) as tmp:
            solve_and_write_mixture(
                tmp, stats, method=cand.method, budget_tokens=budget_tokens(c), max_epochs=max_epochs(c),
                utility_path=utility_path(ctx), params=cand.solver_params(), seq_len=info.seq_len, seed=c.seed,
                order={"method": "icp", "windows": os.path.relpath(pack, final)}, window=window, **extra)
    return out


# --------------------------------------------------------------------------------- proxy runs
def candidate_folder(cand) -> str:
    """``<name>-<8 hex of method + params>``: a changed candidate under an old name is a new folder."""
    from ..mixers.params import method_key

    spec = fingerprint("study-candidate", 1, {"method": method_key(cand.method), "params": to_plain(cand.params)}, {})
    return f"{cand.name}-{spec[:8]}"


def run_name(cand, order: str, seed: int) -> str:
    return f"{candidate_folder(cand)}__{order}__s{seed}"


def fault_point(where: str) -> None:
    """Test hook: ``MIXWEAVE_FAULT=study:<where>`` kills the process there (crash/resume tests)."""
    if os.environ.get("MIXWEAVE_FAULT") == f"study:{where}":
        LOG.error("fault injection: killing the process at study:%s", where)
        os._exit(77)


def proxy_run(ctx, work: Path, *, cand, order: str, seed: int, mixture_path: Path, dataset, holdout: dict,
              records: list, tokenizer) -> dict:
    """Train and evaluate one proxy (committed atomically into ``work/runs/<run>``)."""
    import torch

    from ..data.mixture_manifest import read_mixture_manifest
    from ..data.windows import windows_info
    from ..trainer.evaluate import answer_metrics, window_loss
    from ..trainer.plan import plan_windows
    from ..trainer.train import train_plan

    s = ctx.config.study
    pack = work / "packs" / order
    final = work / "runs" / run_name(cand, order, seed)
    final.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with atomic_folder(final) as tmp:
        plan = plan_windows(read_mixture_manifest(mixture_path), windows_info(pack),
                            mixture_sha256=sha256_file(mixture_path), pack_sha256=manifest_sha256(pack),
                            where=f"study {cand.name}")
        cfg = dataclasses.replace(s.proxy, seed=seed, data_seed=seed, holdout_windows=0, benchmarks=None,
                                  resume=False, eval_interval=None, checkpoint_interval=None, stop_after=None)
        result = train_plan(plan, pack, tmp / "train", cfg, dataset=dataset)
        model = result.model
        device = next(model.parameters()).device
        metrics: dict[str, float] = {}
        losses = {}
        for source, w in holdout.items():
            if len(w):
                losses[source] = window_loss(model, w, device, cfg.eval_batch_size)
                metrics[f"heldout_loss/{source}"] = losses[source]
        if losses:
            metrics["heldout_loss/mean"] = float(np.mean(list(losses.values())))
        bench = answer_metrics(model, records, tokenizer, plan.seq_len, device, cfg.eval_batch_size,
                               max_per_benchmark=s.eval_examples) if records else {}
        bpb = {b: v["bpb"] for b, v in bench.items() if v["n"] > 0}
        acc = {b: v["acc"] for b, v in bench.items() if "acc" in v}
        metrics.update({f"bpb/{b}": v for b, v in bpb.items()})
        metrics.update({f"acc/{b}": v for b, v in acc.items()})
        if bpb:
            metrics["bpb/mean"] = float(np.mean(list(bpb.values())))
        if acc:
            metrics["acc/mean"] = float(np.mean(list(acc.values())))
        params = int(model.num_params())
        shutil.rmtree(tmp / "train" / "checkpoints", ignore_errors=True)  # results only: 13 MB+ a run otherwise
        record = {"candidate": cand.name, "method": cand.method, "order": order, "seed": seed,
                  "steps": result.step, "tokens": int(result.tokens_seen), "params": params,
                  "flops": 6.0 * params * int(result.tokens_seen),
                  "first_loss": result.losses[0] if result.losses else None,
                  "last_loss": result.losses[-1] if result.losses else None,
                  "realized_weights": plan.realized_weights, "benchmarks": bench, "metrics": metrics,
                  "seconds": round(time.perf_counter() - started, 2), "device": str(device)}
        write_json_atomic(tmp / RUN_RESULT, finite(record))
    return record


def run_all(ctx, work: Path) -> list[dict]:
    """Every proxy run of the study, skipping those already committed; returns their records."""
    from ..data.benchmarks import load_benchmarks
    from ..data.windows import read_windows, windows_info
    from ..trainer.dataset import PackDataset
    from ..trainer.evaluate import tokenizer_from_info

    c, s = ctx.config, ctx.config.study
    held = build_packs(ctx, work)
    stats = pack_stats(ctx, work, held)
    mixtures = solve_candidates(ctx, work, stats)
    hold_pack = work / "packs" / "holdout"
    holdout = {name: read_windows(hold_pack, name)[: s.eval_windows] for name in sorted(windows_info(hold_pack).sources)}
    records = load_benchmarks(c.benchmarks) if c.benchmarks else []
    tokenizer = tokenizer_from_info(windows_info(hold_pack).tokenizer)
    results, done = [], 0
    for order in s.orders:
        dataset = None
        for cand in s.candidates:
            for seed in range(s.seeds):
                final = work / "runs" / run_name(cand, order, seed) / RUN_RESULT
                if final.is_file():
                    results.append(json.loads(final.read_text()))
                    continue
                if dataset is None:
                    dataset = PackDataset(work / "packs" / order)
                LOG.info("study: proxy %s / %s / seed %d", cand.name, order, seed)
                results.append(proxy_run(ctx, work, cand=cand, order=order, seed=seed,
                                         mixture_path=mixtures[cand.name], dataset=dataset, holdout=holdout,
                                         records=records, tokenizer=tokenizer))
                done += 1
                fault_point(f"run-{done}")
    return results


# -------------------------------------------------------------------------------- statistics
def result_rows(results: list[dict]) -> list[dict]:
    """One row per candidate x order x seed x metric (the rows of study.parquet)."""
    rows = []
    for r in results:
        for metric, value in sorted(r["metrics"].items()):
            rows.append({"candidate": r["candidate"], "method": r["method"], "order": r["order"], "seed": r["seed"],
                         "metric": metric, "kind": metric_kind(metric), "target": metric.split("/", 1)[1],
                         "value": float(value), "higher_is_better": higher_is_better(metric),
                         "tokens": r["tokens"], "params": r["params"], "flops": r["flops"]})
    return rows


def summarize(results: list[dict], study, *, seeds: int) -> dict:
    """Per candidate x order x metric intervals, paired comparisons with the baseline and icp - random."""
    values: dict[tuple[str, str, str], dict[int, float]] = {}
    for r in results:
        for metric, v in r["metrics"].items():
            values.setdefault((r["candidate"], r["order"], metric), {})[int(r["seed"])] = float(v)
    metrics = sorted({m for (_, _, m) in values})
    alpha, n_boot = study.alpha, study.n_boot

    def series(cand: str, order: str, metric: str) -> dict[int, float]:
        return values.get((cand, order, metric), {})

    summary = []
    for cand in study.candidates:
        for order in study.orders:
            for metric in metrics:
                v = series(cand.name, order, metric)
                if v:
                    summary.append({"candidate": cand.name, "order": order, "metric": metric,
                                    "higher_is_better": higher_is_better(metric),
                                    **study_stats.mean_interval([v[k] for k in sorted(v)], alpha)})

    def compare(a: dict[int, float], b: dict[int, float], metric: str) -> dict | None:
        common = sorted(set(a) & set(b))
        if not common:
            return None
        r = study_stats.paired_bootstrap([a[k] for k in common], [b[k] for k in common], alpha=alpha, n_boot=n_boot,
                                         seed=0)
        r["verdict"] = study_stats.verdict(r["lo"], r["hi"], higher_is_better(metric))
        return r

    paired = []
    for cand in study.candidates:
        if cand.name == study.baseline:
            continue
        for order in study.orders:
            for metric in metrics:
                r = compare(series(cand.name, order, metric), series(study.baseline, order, metric), metric)
                if r is not None:
                    paired.append({"candidate": cand.name, "baseline": study.baseline, "order": order,
                                   "metric": metric, **r})
    orders = []
    if set(study.orders) == {"icp", "random"}:
        for cand in study.candidates:
            for metric in metrics:
                r = compare(series(cand.name, "icp", metric), series(cand.name, "random", metric), metric)
                if r is not None:
                    orders.append({"candidate": cand.name, "metric": metric, **r})
    note = (f"{seeds} seeds: intervals are wide; the sign test cannot reach p < {2 / 2 ** seeds:.2f}, and the paired "
            "bootstrap over so few seeds is optimistic (never wider than the range of the differences)."
            if seeds < 6 else f"{seeds} seeds per candidate and order.")
    return {"summary": summary, "paired": paired, "icp_vs_random": orders, "note": note}


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN; one seed has no interval)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


# -------------------------------------------------------------------------------------- charts
KEY_METRICS = ("bpb/mean", "heldout_loss/mean", "acc/mean")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def chart_means(summary: list[dict], study, path: Path) -> Path:
    """Mean +- interval per candidate (rows) for each benchmark's bpb and the key metrics (panels)."""
    metrics = [m for m in KEY_METRICS if any(r["metric"] == m for r in summary)]
    metrics += sorted({r["metric"] for r in summary if r["metric"].startswith("bpb/") and r["metric"] != "bpb/mean"})
    cols = 3
    rows = max(1, math.ceil(len(metrics) / cols))
    names = [c.name for c in study.candidates]
    fig = _figure(4.2 * cols, 0.35 * len(names) * rows + 1.2 * rows)
    colors = {"icp": "#1f77b4", "random": "#ff7f0e"}
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, k + 1)
        for j, order in enumerate(study.orders):
            pts = {r["candidate"]: r for r in summary if r["metric"] == metric and r["order"] == order}
            y = [i + (j - (len(study.orders) - 1) / 2) * 0.25 for i, n in enumerate(names) if n in pts]
            x = [pts[n]["mean"] for n in names if n in pts]
            e = [0.0 if math.isnan(pts[n]["half"]) else pts[n]["half"] for n in names if n in pts]
            ax.errorbar(x, y, xerr=e, fmt="o", ms=3, capsize=2, color=colors.get(order), label=order)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(metric + (" (higher better)" if higher_is_better(metric) else " (lower better)"), fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        if k == 0:
            ax.legend(fontsize=7)
    fig.suptitle(f"mean ± {100 * (1 - study.alpha):.0f}% t-interval over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def chart_paired(paired: list[dict], study, path: Path) -> Path:
    """Paired differences (candidate - baseline) with bootstrap intervals for the key metrics."""
    metrics = [m for m in KEY_METRICS if any(r["metric"] == m for r in paired)] or ["bpb/mean"]
    names = [c.name for c in study.candidates if c.name != study.baseline]
    fig = _figure(4.2 * len(metrics), 0.4 * max(len(names), 1) + 1.5)
    colors = {"better": "#2ca02c", "worse": "#d62728", "not significant": "#7f7f7f"}
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), k + 1)
        for j, order in enumerate(study.orders):
            for i, n in enumerate(names):
                r = next((p for p in paired if p["candidate"] == n and p["order"] == order and p["metric"] == metric),
                         None)
                if r is None:
                    continue
                y = i + (j - (len(study.orders) - 1) / 2) * 0.3
                ax.plot([r["lo"], r["hi"]], [y, y], color=colors[r["verdict"]], lw=2)
                ax.plot([r["diff"]], [y], "o" if order == "icp" else "s", color=colors[r["verdict"]], ms=4)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{metric}: candidate − {study.baseline}", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle("paired differences (bootstrap over seeds; o icp, ■ random; green better, red worse, grey n.s.)",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


# -------------------------------------------------------------------------------- the stage body
def run_study(ctx, tmp: Path) -> dict:
    """Everything of the study stage: work folder, packs, mixtures, runs, statistics, outputs in ``tmp``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    s = ctx.config.study
    started = time.perf_counter()
    work = work_folder(ctx)
    results = run_all(ctx, work)
    rows = result_rows(results)
    pq.write_table(pa.Table.from_pylist(rows), tmp / "study.parquet")
    stats = summarize(results, s, seeds=s.seeds)
    total_flops = float(sum(r["flops"] for r in results))
    runs = [{k: r[k] for k in ("candidate", "method", "order", "seed", "steps", "tokens", "params", "flops",
                               "first_loss", "last_loss", "seconds", "device")} for r in results]
    mixtures = {}
    for cand in s.candidates:
        m = json.loads((work / "mixtures" / candidate_folder(cand) / "mixture.json").read_text())
        mixtures[cand.name] = {"method": m["method"], "weights": {x["name"]: x["weight"] for x in m["sources"]}}
    held = json.loads((work / "packs" / "holdout.json").read_text())
    doc = {"schema_version": 1, "baseline": s.baseline, "candidates": [c.name for c in s.candidates],
           "orders": list(s.orders), "seeds": s.seeds, "alpha": s.alpha, "n_boot": s.n_boot,
           "budget_tokens": budget_tokens(ctx.config), "max_epochs": max_epochs(ctx.config),
           "seq_len": ctx.config.order.seq_len, "note": stats["note"],
           "flops": {"per_run": "6 x params x training tokens", "total": total_flops},
           "holdout": {k: {kk: vv for kk, vv in v.items() if kk != "holdout_docs"} for k, v in held.items()},
           "mixtures": mixtures, "runs": runs, "summary": stats["summary"], "paired": stats["paired"],
           "icp_vs_random": stats["icp_vs_random"], "config": to_plain(s),
           "seconds": round(time.perf_counter() - started, 1)}
    write_json_atomic(tmp / "study.json", finite(doc))
    chart_means(stats["summary"], s, tmp / "study_means.png")
    chart_paired(stats["paired"], s, tmp / "study_paired.png")
    shutil.copytree(work / "packs", tmp / "packs")
    for cand in s.candidates:  # this study's candidates and runs only (the work folder may hold more)
        shutil.copytree(work / "mixtures" / candidate_folder(cand), tmp / "mixtures" / cand.name)
        for order in s.orders:
            for seed in range(s.seeds):
                name = run_name(cand, order, seed)
                shutil.copytree(work / "runs" / name, tmp / "runs" / f"{cand.name}__{order}__s{seed}")
    verdicts = {}
    for p in stats["paired"]:
        if p["metric"] in KEY_METRICS:
            verdicts[f"{p['candidate']}/{p['order']}/{p['metric']}"] = p["verdict"]
    return {"n_runs": len(results), "total_flops": total_flops, "verdicts": verdicts}


# -------------------------------------------------------------------------------------- report
def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def _sgn(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:+.3f}"


def study_table_rows(doc: dict) -> list[list[str]]:
    """candidate, order, then mean ± half of each key metric, then the verdicts vs the baseline."""
    rows = []
    for cand in doc["candidates"]:
        for order in doc["orders"]:
            row = [cand, order]
            for metric in KEY_METRICS:
                r = next((x for x in doc["summary"] if x["candidate"] == cand and x["order"] == order
                          and x["metric"] == metric), None)
                row.append("–" if r is None else f"{_fmt(r['mean'])} ± {_fmt(r['half'])}")
            for metric in KEY_METRICS:
                p = next((x for x in doc["paired"] if x["candidate"] == cand and x["order"] == order
                          and x["metric"] == metric), None)
                row.append("baseline" if cand == doc["baseline"] else "–" if p is None else
                           f"{_sgn(p['diff'])} [{_sgn(p['lo'])}, {_sgn(p['hi'])}] {p['verdict']}")
            rows.append(row)
    return rows


def study_section(out: str | Path) -> str | None:
    """HTML of the study (table + charts) for the report; None when no study ran in ``out``."""
    folder = Path(out) / "study"
    if read_manifest(folder) is None or not (folder / "study.json").is_file():
        return None
    doc = json.loads((folder / "study.json").read_text())
    headers = ["candidate", "order", *(f"{m} mean ± half" for m in KEY_METRICS),
               *(f"Δ {m} vs {doc['baseline']} [CI]" for m in KEY_METRICS)]
    esc = html.escape
    table = ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>"
             + "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>"
                       for row in study_table_rows(doc)) + "</table>")
    imgs = ""
    for name, alt in (("study_means.png", "study means with intervals"), ("study_paired.png", "paired differences")):
        png = folder / name
        if png.is_file():
            imgs += f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}">'
    return (f"<h2>Study: {len(doc['candidates'])} candidates × {len(doc['orders'])} orders × {doc['seeds']} seeds</h2>"
            f"<p>proxy runs on {doc['budget_tokens']:,.0f} tokens each, seq_len {doc['seq_len']}, total "
            f"{doc['flops']['total']:.3g} FLOPs (6 × params × tokens). Lower is better for bits per byte and "
            f"held-out loss, higher for accuracy. A candidate is called better only when the paired "
            f"{100 * (1 - doc['alpha']):.0f}% bootstrap interval excludes zero. {esc(doc['note'])}</p>"
            + table + imgs)
