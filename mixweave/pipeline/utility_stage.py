"""The ``utility`` stage: a source x benchmark utility table for UtiliMax / weakest-link.

Thin wrapper over :mod:`mixweave.mixers.utility`: documents come from the ingest artifact
(sampled per source with seeded hash keys, so the sample does not depend on partitioning),
benchmarks from ``benchmarks:``. ``method: table`` adopts an existing table instead. MEDU's rating
cache lives beside the stage folder (``utility.medu-cache.sqlite``) so a crashed run resumes.
"""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig, to_plain
from ..data.manifest import sha256_file
from .runner import Stage, StageContext, StageResult


def utility_inputs(config: RunConfig) -> tuple[str, ...]:
    return () if config.utility is not None and config.utility.method == "table" else ("ingest",)


def run_utility_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ..mixers.utility.api import run_estimate, table_result, write_utility_files

    u = ctx.config.utility
    if u.method == "table":
        result = table_result(u.table)
    else:
        common = {"per_source": u.per_source, "seed": ctx.config.seed, **u.settings}
        if u.method == "embedding":
            settings = {"encoder": u.encoder, "top_k": u.top_k, "max_tokens": u.max_tokens, **common}
        else:
            cache = ctx.artifact("utility").parent / "utility.medu-cache.sqlite"
            settings = {"backend": u.backend, "model": u.model, "mode": u.mode, "cache": str(cache), **common}
        docs = str(ctx.artifact("ingest") / "docs")
        result = run_estimate(u.method, docs, ctx.config.benchmarks, **settings)
    write_utility_files(result, tmp)
    cost = result.cost
    return StageResult(
        counts={"rows": result.table.num_rows, "n_docs": cost.get("n_docs"), "n_sources": cost.get("n_sources"),
                "n_benchmarks": cost.get("n_benchmarks")},
        drops={"unparseable": cost.get("n_unparseable", 0), "failed": cost.get("n_failed", 0)},
        timings={"utility_s": cost.get("wall_s", {}).get("total")},
        extra={"cost": {k: cost.get(k) for k in ("method", "tokens", "flops", "ablation")}},
    )


def utility_stage() -> Stage:
    def files_fingerprint(c: RunConfig):
        u = c.utility
        if u is None:
            return None
        paths = [u.table] if u.method == "table" else [c.benchmarks]
        return [sha256_file(p) if p and Path(p).is_file() else p for p in paths]

    return Stage("utility", utility_inputs, 1, lambda c: {"utility": to_plain(c.utility), "seed": c.seed,
                                                           "benchmarks": c.benchmarks},
                 run_utility_stage, extra_fingerprint=files_fingerprint, enabled=lambda c: c.utility is not None,
                 describe="source x benchmark utility table")
