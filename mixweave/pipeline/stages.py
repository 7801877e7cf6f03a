"""The stages of a run, in dependency order. Later capabilities add theirs here.

ingest -> count -> mix. Each stage function is thin: it reads its inputs, calls a job or a pure
core, and writes files into the temporary folder the runner gives it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..config import RunConfig, to_plain
from ..data.manifest import read_listed_file, require_manifest, write_json_atomic
from .runner import Stage, StageContext, StageResult

STATS_SCHEMA_VERSION = 1


# ---------------------------------------------------------------------------------------- ingest
def ingest_config_slice(config: RunConfig) -> dict:
    return {"sources": to_plain(config.sources), "tokenizer": to_plain(config.tokenizer), "ingest": to_plain(config.ingest)}


def input_files_fingerprint(config: RunConfig) -> list:
    """Size and mtime of every input file, so an edited input re-runs ingest.

    Files under the run's out folder (and in any mixweave stage folder) are not inputs, exactly as
    in :func:`run_ingest_stage`, so a run's own output never changes its ingest fingerprint.
    """
    from ..jobs.ingest import SourceSpec, expand_sources

    specs = {n: SourceSpec(n, s.paths, s.text_field, s.id_field) for n, s in config.sources.items()}
    rows = []
    for f in expand_sources(specs, exclude=(str(Path(config.out).resolve()),)):
        try:
            st = os.stat(f["path"])
            rows.append([f["path"], st.st_size, st.st_mtime_ns])
        except OSError:  # a dangling symlink: quarantined at ingest; its presence still counts
            rows.append([f["path"], None, None])
    return rows


def run_ingest_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ..data.tokenizer import load_tokenizer
    from ..jobs.ingest import SourceSpec, run_ingest

    config = ctx.config
    tokenizer = load_tokenizer(config.tokenizer.path, config.tokenizer.pattern)
    specs = {n: SourceSpec(n, s.paths, s.text_field, s.id_field) for n, s in config.sources.items()}
    # a run never reads its own output: not the run folder, nor this stage's (possibly pinned) folder
    exclude = tuple(str(p.resolve()) for p in (ctx.out, ctx.artifact("ingest"), tmp))
    stats = run_ingest(
        ctx.spark(), sources=specs, out_root=tmp, tokenizer_path=config.tokenizer.path,
        tokenizer_pattern=config.tokenizer.pattern, max_doc_bytes=config.ingest.max_doc_bytes,
        target_file_mb=config.ingest.target_file_mb, partitions=config.spark.partitions, exclude=exclude,
    )
    drops = {name: s["quarantine_reasons"] for name, s in stats["sources"].items()}
    counts = dict(stats["totals"])
    counts["input_equals_kept_plus_quarantined"] = counts["n_input"] == counts["n_docs"] + counts["n_quarantined"]
    return StageResult(
        counts=counts, drops=drops, timings=stats["timings"],
        extra={"tokenizer": tokenizer.info, "sources": stats["sources"], "input_bytes": stats["input_bytes"],
               "n_files_read": stats["n_files_read"], "spark_master": ctx.spark().sparkContext.master},
    )


# ----------------------------------------------------------------------------------------- count
def run_count_stage(ctx: StageContext, tmp: Path) -> StageResult:
    """stats.json: per-source docs, tokens, bytes and log2 token-length histogram.

    Ingest already computes these from the exact rows it wrote (``summarize`` in the ingest job),
    so this stage projects the ingest manifest instead of re-reading every document; `mixweave
    verify` is what checks the files against that manifest."""
    started = time.perf_counter()
    ingest_dir = ctx.artifact("ingest")
    ingest_manifest = require_manifest(ingest_dir, "ingest")
    keys = ("paths", "n_docs", "n_tokens", "n_bytes", "n_quarantined", "quarantine_reasons", "length_histogram")
    stats_sources = {
        name: {**{k: info[k] for k in keys},
               "files": [os.path.relpath(ingest_dir / f, ctx.artifact("count")) for f in info["files"]]}
        for name, info in ingest_manifest["sources"].items()
    }
    stats = {
        "schema_version": STATS_SCHEMA_VERSION,
        "tokenizer": ingest_manifest["tokenizer"],
        "sources": stats_sources,
        "totals": {k: sum(s[k] for s in stats_sources.values()) for k in ("n_docs", "n_tokens", "n_bytes", "n_quarantined")},
    }
    write_json_atomic(tmp / "stats.json", stats)
    return StageResult(counts=stats["totals"], timings={"count_s": round(time.perf_counter() - started, 3)})


def load_stats(count_dir) -> dict:
    """stats.json of a count artifact, refused when it was edited after the stage wrote it."""
    return json.loads(read_listed_file(count_dir, "stats.json"))


def build_stages() -> dict[str, Stage]:
    stages = [
        Stage("ingest", (), 1, ingest_config_slice, run_ingest_stage, extra_fingerprint=input_files_fingerprint,
              describe="read sources, normalise, tokenise, quarantine bad records"),
        Stage("count", ("ingest",), 1, lambda c: {}, run_count_stage,
              describe="per-source docs, tokens, bytes, length histogram -> stats.json"),
    ]
    from .icp_stages import icp_stages
    from .mix_stage import mix_stage
    from .utility_stage import utility_stage

    stages.extend(icp_stages())
    stages.append(utility_stage())
    stages.append(mix_stage())
    from .train_export_stages import export_train_stages

    stages.extend(export_train_stages())
    return {s.name: s for s in stages}
