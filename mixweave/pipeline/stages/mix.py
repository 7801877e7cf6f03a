"""The ``mix`` stage: stats (or packed windows) + optional utility table -> mixture.json + chart.

Mixing happens after packing (DESIGN.md): when the ICP stages run, each source's token count is
the tokens of its S-token windows (after semantic dedup and the dropped tail), so a weight is a
share of windows' tokens; without them it is the ingest token count. ``budget_tokens: 0`` means
"one pass over everything" (the sum of the sources' tokens).
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

from ...data.artifacts import load_stats
from ...data.manifest import sha256_file
from ...data.typed import to_plain
from ...data.windows import windows_info
from ...errors import ConfigError
from ..config import RunConfig
from ..runner import Stage, StageContext, StageResult

LOG = logging.getLogger(__name__)


def is_learned(method: str | None) -> bool:
    """DoReMi / RegMix: methods that train proxy models on the pack's windows."""
    from ...mixers.learned import LEARNED_METHODS
    from ...mixers.params import method_key

    return method is not None and method_key(method) in LEARNED_METHODS


def mix_inputs(config: RunConfig) -> tuple[str, ...]:
    inputs = ("count", "pack") if config.order is not None else ("count",)
    if config.utility is not None and not (config.mix and config.mix.utility):
        inputs += ("utility",)
    return inputs


def utility_table_path(ctx: StageContext) -> Path | None:
    """mix.utility when given, else the utility stage's table when that stage is configured."""
    m = ctx.config.mix
    if m.utility:
        return Path(m.utility)
    if ctx.config.utility is not None:
        return ctx.artifact("utility") / "utility.parquet"
    return None


def mix_stats(ctx: StageContext) -> tuple[dict, dict | None, dict | None, int]:
    """(stats used for solving, order block, window block, seq_len)."""
    stats = load_stats(ctx.artifact("count"))
    for name, entry in stats["sources"].items():
        if entry["n_docs"] == 0:
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(entry.get("quarantine_reasons", {}).items())) or "none"
            raise ConfigError(f"source {name}: ingest kept no documents ({entry.get('n_quarantined', 0)} quarantined: "
                              f"{reasons}; see {ctx.artifact('ingest') / 'quarantine' / name}); fix its paths or "
                              "fields, or remove it from sources")
    if ctx.config.order is None:
        return stats, None, None, 2048
    info = windows_info(ctx.artifact("pack"))
    packed = copy.deepcopy(stats)
    for name, entry in packed["sources"].items():
        if entry.get("bytes_per_token") is None and entry.get("n_tokens"):  # stats.json from before the field
            entry["bytes_per_token"] = entry["n_bytes"] / entry["n_tokens"]  # ingest's rate, kept for the windows
        windows = info.sources.get(name)
        if windows is None:
            raise ConfigError(f"pack has no windows for source {name}; re-run the pack stage")
        if int(windows["n_windows"]) == 0:
            raise ConfigError(
                f"source {name}: its {windows.get('n_docs', '?')} documents kept after dedup hold "
                f"{windows.get('stream_tokens', '?')} tokens with separators, fewer than one window of "
                f"{info.window_tokens} tokens, so pack made no windows; lower order.seq_len, add data to the "
                "source, or remove it from sources")
        entry["n_tokens"] = int(windows["n_tokens"])
        entry["n_docs"] = int(windows.get("n_docs", entry["n_docs"]))
    order = {"method": "icp", "windows": os.path.relpath(ctx.artifact("pack"), ctx.artifact("mix"))}
    window = {"tokens": info.window_tokens, "doc_separator": "eos",
              "labels": "extra_token" if info.plus_one else "shift_within_window"}
    if info.sink_id is not None:  # the pack's tokenizer (with its attention-sink token) is the mixture's
        packed["tokenizer"], window["sink_id"] = dict(info.tokenizer), info.sink_id
    return packed, order, window, info.seq_len


def solve_and_write_mixture(
    folder: Path, stats: dict, *, method: str, budget_tokens: float, max_epochs: float,
    utility_path: str | Path | None = None, params: dict | None = None, seq_len: int = 2048, seed: int = 0,
    order: dict | None = None, window: dict | None = None, pack_dir: str | Path | None = None,
    benchmarks: str | Path | None = None, unit: str = "tokens", budget_bytes: float = 0.0,
) -> dict:
    """Solve the mixture for ``stats`` and write ``folder/mixture.json`` + ``folder/mixture.png``.

    ``budget_tokens`` 0 means one pass over every source's tokens. Shared by the ``mix`` stage,
    ``mixweave mix --stats`` and the study's candidates; returns the manifest written.
    The learned methods (doremi, regmix) train proxy models on ``pack_dir``'s windows (RegMix's
    default target uses ``benchmarks``) under ``folder/proxies/`` and record them in the manifest's
    ``learned`` block. ``unit: bytes`` solves the same program over the sources' byte sizes with
    ``budget_bytes`` (:mod:`mixweave.mixers.byte_units`); mixture.json states both units."""
    from ...data.mixture_manifest import build_mixture_manifest, write_mixture_manifest
    from ...data.utility_table import read_utility_table
    from ...mixers import mix_from_stats
    from ...mixers.byte_units import bytes_per_token, solve_stats
    from ...mixers.chart import plot_mixture

    utility = read_utility_table(utility_path) if utility_path else None
    learned = None

    def solve(sizes: dict, budget: float):  # sizes: stats with n_tokens in the solved unit
        nonlocal learned, params
        if is_learned(method):
            learned = _learn(folder, sizes, method=method, budget=budget, max_epochs=max_epochs, params=params,
                             pack_dir=pack_dir, benchmarks=benchmarks)
            params = {**learned.record["params"], "learned_weights": learned.weights}  # defaults recorded too
        return mix_from_stats(sizes, method=method, budget_tokens=budget, max_epochs=max_epochs, utility=utility,
                              **(params or {}))

    mixture, budget = solve_stats(stats, unit=unit, budget_tokens=budget_tokens, budget_bytes=budget_bytes,
                                  solve=solve)
    if unit == "bytes":  # the rates the byte sizes used, recorded with the mixture
        rate = bytes_per_token(stats)
        stats = {**stats, "sources": {n: {**e, "bytes_per_token": rate[n]} for n, e in stats["sources"].items()}}
    manifest = build_mixture_manifest(mixture, stats, seq_len=seq_len, seed=seed, order=order, window=window,
                                      unit=unit, budget_bytes=budget if unit == "bytes" else None)
    if learned is not None:
        manifest["learned"] = {**learned.record, "proxies_folder": "proxies"}
    folder.mkdir(parents=True, exist_ok=True)  # only once the request proved feasible
    write_mixture_manifest(folder / "mixture.json", manifest)
    plot_mixture(manifest, folder / "mixture.png")
    return manifest


def _learn(folder: Path, stats: dict, *, method: str, budget: float, max_epochs, params: dict | None,
           pack_dir: str | Path | None, benchmarks: str | Path | None):
    """Train the learned method's proxies (after a feasibility check of the caps, so an impossible
    budget fails before any training)."""
    from ...mixers import sources_from_stats
    from ...mixers.capping import check_total_capacity
    from ...mixers.learned import learned_weights
    from ...mixers.mixture import resolve_max_epochs, source_columns

    if pack_dir is None:
        raise ConfigError(f"mix.method {method} trains proxy models on packed windows: add an order section to "
                          "the run config (or pass pack_dir) so the pack stage runs before mix")
    names, n_tokens, _, _ = source_columns(sources_from_stats(stats))
    caps = resolve_max_epochs(4.0 if max_epochs is None else max_epochs, names)
    check_total_capacity(names, n_tokens, caps, budget)
    return learned_weights(method, pack_dir, names, n_tokens, params or {}, Path(folder) / "proxies",
                           benchmarks=benchmarks)


def run_mix_stage(ctx: StageContext, tmp: Path) -> StageResult:
    m = ctx.config.mix
    stats, order, window, seq_len = mix_stats(ctx)
    if window is not None and 0 < m.budget_tokens < window["tokens"]:
        raise ConfigError(f"mix.budget_tokens {m.budget_tokens:g} is less than one window of {window['tokens']} tokens; "
                          "give a budget of at least one window (0 = one pass over every source)")
    params = m.solver_params()
    if uses_skills(m.method):  # the run's skill tags (config over records); defaults are the solver's
        from ...data.benchmarks import configured_skills

        params["benchmark_skills"] = configured_skills(ctx.config.benchmark_skills, ctx.config.benchmarks)
    if m.phases:  # sequence-length phases: mixture.json + one variant mixture per phase
        return write_phase_variants(ctx, tmp, stats, order, window, seq_len, params)
    manifest = solve_and_write_mixture(
        tmp, stats, method=m.method, budget_tokens=m.budget_tokens, max_epochs=m.max_epochs,
        utility_path=utility_table_path(ctx), params=params, seq_len=seq_len, seed=ctx.config.seed,
        order=order, window=window, pack_dir=ctx.artifact("pack") if ctx.config.order is not None else None,
        benchmarks=ctx.config.benchmarks if is_learned(m.method) else None,
        unit=m.unit, budget_bytes=m.budget_bytes,
    )
    extra = {}
    if m.bts is not None:
        variants = write_bts_variants(tmp, manifest, stats, m, seed=ctx.config.seed, seq_len=seq_len)
        manifest = _with_variants(tmp, manifest, variants)
        extra["variants"] = [v["name"] for v in variants]
    return StageResult(
        counts={"n_sources": len(manifest["sources"]), "budget_tokens": manifest["budget_tokens"]},
        extra={"method": manifest["method"],
               "weights": {s["name"]: s["weight"] for s in manifest["sources"]},
               "epochs": {s["name"]: s["epochs"] for s in manifest["sources"]}, **extra},
    )


def _with_variants(folder: Path, manifest: dict, variants: list[dict]) -> dict:
    """mixture.json rewritten with its ``variants`` list appended (after the variant files exist)."""
    from ...data.mixture_manifest import manifest_problems, write_mixture_manifest

    manifest = {**manifest, "variants": [*manifest.get("variants", []), *variants]}
    problems = manifest_problems(manifest)
    if problems:
        raise ConfigError(f"the mixture's variants are invalid: {problems[0]}")
    write_mixture_manifest(folder / "mixture.json", manifest)
    return manifest


def write_bts_variants(folder: Path, seed_mixture: dict, stats: dict, m, *, seed: int, seq_len: int) -> list[dict]:
    """Branch-train-stitch (mix.bts, :mod:`mixweave.mixers.bts`): from the seed mixture (the run's
    solved mixture.json, any method) write ``variants/expert-<name>.json`` per expert and
    ``variants/stitch.json``, each a full mixture.json over the main pack's sizes at its own
    budget under mix.max_epochs; return their ``variants`` entries (experts, then stitch)."""
    from ...data.mixture_manifest import build_mixture_manifest, write_mixture_manifest
    from ...mixers.bts import STITCH, bts_mixtures

    sizes = {s["name"]: {"n_tokens": s["n_tokens"], "n_docs": s["n_docs"], "paths": tuple(s["paths"])}
             for s in seed_mixture["sources"]}
    weights = {s["name"]: s["weight"] for s in seed_mixture["sources"]}
    utility = {s["name"]: s["utility"] for s in seed_mixture["sources"]}
    order = seed_mixture.get("order")
    if order is not None:  # windows relative to the variant file's folder (variants/), as the seed's is to mix/
        order = {**order, "windows": "../" + order["windows"]}
    mixtures = bts_mixtures(sizes, weights, m.bts, m.max_epochs, seed_method=seed_mixture["method"]["name"])
    entries = []
    for name, mixture in mixtures.items():
        manifest = build_mixture_manifest(mixture, stats, seq_len=seq_len, seed=seed, utility=utility,
                                          order=order, window=seed_mixture["window"])
        write_mixture_manifest(folder / "variants" / f"{name}.json", manifest)
        p = mixture.params
        entry = {"name": name, "kind": "stitch" if name == STITCH else "expert", "mixture": f"variants/{name}.json",
                 "pack": None, "seq_len": seq_len, "budget_tokens": manifest["budget_tokens"]}
        if name == STITCH:
            entry.update(stitch=p["stitch"], experts=p["experts"])
        else:
            entry.update(expert=p["expert"], domain=p["domain"], domain_share=p["domain_share"],
                         domain_share_after_caps=p["domain_share_after_caps"])
        entries.append(entry)
    return entries


def uses_skills(method: str | None) -> bool:
    """UtiliMax / weakest-link: methods whose utility columns carry skill tags."""
    from ...mixers.params import method_key

    return method is not None and method_key(method) in ("utilimax", "weakest_link")


def mix_config_slice(c: RunConfig) -> dict:
    out = {"mix": to_plain(c.mix), "seed": c.seed}
    if out["mix"] is not None and out["mix"].get("bts") is None:  # a run without bts keeps its fingerprint
        out["mix"].pop("bts", None)
    if out["mix"] is not None and not out["mix"].get("phases"):  # so does a run without phases
        out["mix"].pop("phases", None)
    if c.benchmark_skills and c.mix is not None and uses_skills(c.mix.method):
        out["benchmark_skills"] = dict(c.benchmark_skills)
    if c.mix is not None and is_learned(c.mix.method):  # proxies read the pack (an input) and the benchmarks
        out["benchmarks"] = c.benchmarks
    return out


def utility_fingerprint(c: RunConfig):
    """sha256 of a given mix.utility table, so an edited table re-runs the mix (and of the
    benchmarks file a learned method's proxies are scored on)."""
    utility = sha256_file(c.mix.utility) if c.mix and c.mix.utility and Path(c.mix.utility).is_file() else None
    if c.mix is not None and is_learned(c.mix.method) and c.benchmarks and Path(c.benchmarks).is_file():
        return {"utility": utility, "benchmarks": sha256_file(c.benchmarks)}
    return utility


def write_phase_variants(ctx: StageContext, tmp: Path, stats: dict, order: dict, window: dict, seq_len: int,
                         params: dict) -> StageResult:
    """mix.phases (:mod:`mixweave.mixers.long_context`): solve the phases with
    :func:`~mixweave.mixers.solve_phases` (mix.method and its params each phase, budgets = share x
    budget, one epoch cap for the whole run), write ``variants/<phase>.json`` per phase over its
    pack (pack/phases/<phase>/, or the main pack) and mixture.json (v2: the ``phases`` block and a
    ``phase`` variant each, with the long-text token share before/after upsampling).

    The whole-run cap of a source is scaled by min(1, its tokens in each phase pack / in the main
    pack) (a longer window drops a longer tail), so that no phase pack is asked for more than the
    cap; inside a long_docs phase each source's target is split over ``<source>`` and
    ``<source>.long`` by :func:`~mixweave.mixers.long_context.upsample_rates`, under the cap
    minus the epochs the earlier phases used (in each pack's own tokens)."""
    from ...data.mixture_manifest import build_mixture_manifest, write_mixture_manifest
    from ...data.utility_table import read_utility_table
    from ...mixers import solve_phases, sources_from_stats
    from ...mixers.api import method_spec
    from ...mixers.chart import plot_mixture
    from ...data.manifest import require_manifest
    from ...errors import InfeasibleError
    from ...mixers.long_context import LONG_SUFFIX, LongGroups, long_share, upsample_rates
    from ...mixers.mixture import Mixture, binding_labels
    import numpy as np

    m, o = ctx.config.mix, ctx.config.order
    names = list(stats["sources"])
    n_main = {n: float(stats["sources"][n]["n_tokens"]) for n in names}
    budget = float(m.budget_tokens or sum(n_main.values()))
    pack_root, mix_root = ctx.artifact("pack"), ctx.artifact("mix")
    packs = {}
    for p in m.phases:
        if p.has_pack(o.seq_len):
            folder = pack_root / "phases" / p.name
            if not (folder / "_manifest.json").is_file():
                raise ConfigError(f"the pack has no phase pack {p.name} (pack/phases/{p.name}); re-run the pack stage "
                                  "(mixweave run --force --stage pack)")
            packs[p.name] = (windows_info(folder), require_manifest(folder, "pack").get("long_docs"))

    def phase_tokens(p, name: str) -> float:  # a source's window tokens in the phase's pack
        if p.name not in packs:
            return n_main[name]
        srcs = packs[p.name][0].sources
        return float(sum(int(srcs[k]["n_tokens"]) for k in (name, name + LONG_SUFFIX) if k in srcs))

    caps = {}
    for name in names:
        ratio = 1.0
        for p in m.phases:
            tokens = phase_tokens(p, name)
            if tokens <= 0:
                raise ConfigError(f"source {name} has no window of phase {p.name}'s seq_len {p.window_len(o.seq_len)} "
                                  "(too few tokens); lower mix.phases seq_len, add data to the source or remove it")
            ratio = min(ratio, tokens / n_main[name])
        caps[name] = m.max_epochs * ratio
    utility_path = utility_table_path(ctx)
    own = dict(params)
    if "utility" in method_spec(m.method).params:
        own["utility"] = read_utility_table(utility_path) if utility_path else None
    combined, solved = solve_phases(sources_from_stats(stats), [(p.share * budget, (m.method, own)) for p in m.phases],
                                    max_epochs=caps)
    rate = {n: stats["sources"][n].get("bytes_per_token") for n in names}
    utility_rows = {n: dict(combined.utility.get(n, {})) for n in names}
    used = dict.fromkeys(names, 0.0)  # epochs used by earlier phases, in each phase pack's tokens
    entries, summary = [], []
    for p, phase in zip(m.phases, solved):
        S = p.window_len(o.seq_len)
        info, long_section = packs.get(p.name, (None, None))
        p_budget = float(phase.budget_tokens)
        targets, sizes, docs, groups, rates, uniform = {}, {}, {}, {}, {}, {}
        for name in names:
            T = float(phase.target_tokens[name])
            n_phase = phase_tokens(p, name)
            if info is None:
                targets[name], sizes[name], docs[name] = T, n_main[name], int(stats["sources"][name]["n_docs"])
            elif p.long_docs is None:
                e = info.sources[name]
                targets[name], sizes[name], docs[name] = T, float(e["n_tokens"]), int(e["n_docs"])
            else:
                short, long = info.sources.get(name), info.sources.get(name + LONG_SUFFIX)
                ls = long_section["sources"][name]
                g = LongGroups(n_short=int(short["n_windows"]) if short else 0, n_long=int(ls["n_long_windows"]),
                               stream_short=int(ls["window_stream_tokens"]) - int(ls["long_window_stream_tokens"]),
                               stream_long=int(ls["long_window_stream_tokens"]),
                               longdoc_short=int(ls["long_doc_tokens"]) - int(ls["long_window_long_doc_tokens"]),
                               longdoc_long=int(ls["long_window_long_doc_tokens"]))
                cap_left = max(m.max_epochs - used[name], 0.0)
                try:
                    r_short, r_long = upsample_rates(T / S, g.n_short, g.n_long, p.long_docs.upsample, cap_left)
                except InfeasibleError as exc:
                    raise ConfigError(f"mix.phases.{p.name}: source {name}: {exc}; lower the budget or raise "
                                      "mix.max_epochs") from exc
                groups[name], rates[name], uniform[name] = g, (r_short, r_long), T / S / (g.n_short + g.n_long)
                for key, entry, r, n_win in ((name, short, r_short, g.n_short),
                                             (name + LONG_SUFFIX, long, r_long, g.n_long)):
                    if entry is None:
                        continue
                    targets[key], sizes[key], docs[key] = r * n_win * S, float(entry["n_tokens"]), int(entry["n_docs"])
            used[name] += T / n_phase
        variant_stats = {"schema_version": 1, "tokenizer": stats["tokenizer"], "sources": {}}
        for key in targets:
            base = key[:-len(LONG_SUFFIX)] if key not in n_main else key
            entry = {"n_tokens": sizes[key], "n_docs": docs[key], "paths": stats["sources"][base].get("paths") or []}
            if rate[base] is not None:
                entry["bytes_per_token"] = rate[base]
            variant_stats["sources"][key] = entry
        keys = list(targets)
        tgt = np.array([targets[k] for k in keys])
        weights = tgt / tgt.sum()
        tgt = weights * p_budget
        n_arr = np.array([sizes[k] for k in keys])
        mixture = Mixture(
            method=phase.method, params={**dict(phase.params), "phase": p.name}, budget_tokens=p_budget,
            n_tokens=dict(zip(keys, n_arr)), weights=dict(zip(keys, map(float, weights))),
            target_tokens=dict(zip(keys, map(float, tgt))), epochs=dict(zip(keys, map(float, tgt / n_arr))),
            max_epochs=dict.fromkeys(keys, float(m.max_epochs)),
            binding=dict(zip(keys, binding_labels(weights, m.max_epochs * n_arr / p_budget))),
            solver=phase.solver, status=phase.status, objective=phase.objective,
            n_docs=docs, paths={k: tuple(variant_stats["sources"][k]["paths"]) for k in keys})
        if info is None:
            v_order, v_window, pack_rel = ({**order, "windows": "../" + order["windows"]}, window, None)
        else:
            pack_rel = f"phases/{p.name}"
            v_order = {"method": "icp", "windows": os.path.relpath(pack_root / pack_rel, mix_root / "variants")}
            v_window = {"tokens": info.window_tokens, "doc_separator": "eos",
                        "labels": "extra_token" if info.plus_one else "shift_within_window"}
            if info.sink_id is not None:
                v_window["sink_id"] = info.sink_id
        v_manifest = build_mixture_manifest(
            mixture, variant_stats, seq_len=S, seed=ctx.config.seed, order=v_order, window=v_window,
            utility={k: utility_rows[k[:-len(LONG_SUFFIX)] if k not in n_main else k] for k in keys})
        write_mixture_manifest(tmp / "variants" / f"{p.name}.json", v_manifest)
        entry = {"name": p.name, "kind": "phase", "mixture": f"variants/{p.name}.json", "pack": pack_rel,
                 "seq_len": S, "budget_tokens": v_manifest["budget_tokens"], "share": p.share, "long_docs": None}
        if p.long_docs is not None:
            shares = long_share(groups, rates, uniform)
            entry["long_docs"] = {"min_tokens": p.long_docs.min_tokens, "upsample": p.long_docs.upsample,
                                  "share_before": shares["before"], "share_after": shares["after"],
                                  "sources": shares["sources"]}
        entries.append(entry)
        summary.append({k: entry[k] for k in ("name", "seq_len", "share", "budget_tokens")}
                       | ({"long_share_before": entry["long_docs"]["share_before"],
                           "long_share_after": entry["long_docs"]["share_after"]} if entry["long_docs"] else {}))
    manifest = build_mixture_manifest(combined, stats, seq_len=seq_len, seed=ctx.config.seed, order=order, window=window,
                                      phases=solved, variants=entries)
    write_mixture_manifest(tmp / "mixture.json", manifest)
    plot_mixture(manifest, tmp / "mixture.png")
    return StageResult(
        counts={"n_sources": len(manifest["sources"]), "budget_tokens": manifest["budget_tokens"]},
        extra={"method": manifest["method"],
               "weights": {s["name"]: s["weight"] for s in manifest["sources"]},
               "epochs": {s["name"]: s["epochs"] for s in manifest["sources"]},
               "variants": [e["name"] for e in entries], "phases": summary},
    )


STAGE = Stage("mix", mix_inputs, 1, mix_config_slice, run_mix_stage, extra_fingerprint=utility_fingerprint,
              enabled=lambda c: c.mix is not None, describe="mixture weights -> mixture.json")
