"""The ``ingest`` stage: read sources, normalise, tokenise, quarantine bad records.

A Spark job for inputs of at least ``ingest.distributed_min_mb``; smaller inputs are ingested in
one process (no JVM), with the same bytes, unless they decode to more than
:data:`DECODED_LIMIT_FACTOR` times that (compressed files that expand a lot): then the Spark job
starts over. ``distributed_min_mb`` is not in the fingerprint: the path changes no byte, so a run
ingested either way is reused."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from ...data.typed import to_plain
from ..config import RunConfig
from ..runner import Stage, StageContext, StageResult

LOG = logging.getLogger(__name__)

DECODED_LIMIT_FACTOR = 16
"""An in-process ingest that decodes more than this many times ``ingest.distributed_min_mb`` of records
(Arrow bytes) stops and runs the Spark job instead: one process must not hold a large source."""


def ingest_config_slice(config: RunConfig) -> dict:
    ingest = {k: v for k, v in to_plain(config.ingest).items() if k != "distributed_min_mb"}  # changes no byte
    return {"sources": to_plain(config.sources), "tokenizer": to_plain(config.tokenizer), "ingest": ingest}


def input_files_fingerprint(config: RunConfig) -> list:
    """Size and mtime of every input file, so an edited input re-runs ingest.

    Files under the run's out folder (and in any mixweave stage folder) are not inputs, exactly as
    in :func:`run_ingest_stage`, so a run's own output never changes its ingest fingerprint.
    """
    from ...jobs.ingest import SourceSpec, expand_sources

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
    from ...data.tokenizer import load_tokenizer
    from ...jobs.ingest import (
        SourceSpec,
        TooLargeForOneProcess,
        expand_sources,
        input_file_size,
        run_ingest,
        run_ingest_in_process,
    )

    config = ctx.config
    tokenizer = load_tokenizer(config.tokenizer.path, config.tokenizer.pattern)
    specs = {n: SourceSpec(n, s.paths, s.text_field, s.id_field) for n, s in config.sources.items()}
    # a run never reads its own output: not the run folder, nor this stage's (possibly pinned) folder
    exclude = tuple(str(p.resolve()) for p in (ctx.out, ctx.artifact("ingest"), tmp))
    common = dict(sources=specs, out_root=tmp, tokenizer_path=config.tokenizer.path,
                  tokenizer_pattern=config.tokenizer.pattern, max_doc_bytes=config.ingest.max_doc_bytes,
                  target_file_mb=config.ingest.target_file_mb, exclude=exclude,
                  files=expand_sources(specs, exclude=(*exclude, str(tmp))))  # globbed once, for both paths
    input_bytes = sum(input_file_size(f["path"]) for f in common["files"])
    limit = config.ingest.distributed_min_mb * 2**20
    on_spark = input_bytes >= limit
    if not on_spark:
        LOG.info("ingest: %.1f MiB of input, below ingest.distributed_min_mb (%g): in process", input_bytes / 2**20,
                 config.ingest.distributed_min_mb)
        try:
            stats = run_ingest_in_process(max_decoded_bytes=int(DECODED_LIMIT_FACTOR * limit), **common)
        except TooLargeForOneProcess as exc:
            LOG.warning("ingest: %s (%d x ingest.distributed_min_mb): starting over as a Spark job", exc,
                        DECODED_LIMIT_FACTOR)
            for kind in ("docs", "quarantine"):  # what the in-process ingest wrote
                shutil.rmtree(tmp / kind, ignore_errors=True)
            on_spark = True
    if on_spark:
        stats = run_ingest(ctx.spark(), partitions=config.spark.partitions, **common)
    drops = {name: s["quarantine_reasons"] for name, s in stats["sources"].items()}
    counts = dict(stats["totals"])
    counts["input_equals_kept_plus_quarantined"] = counts["n_input"] == counts["n_docs"] + counts["n_quarantined"]
    return StageResult(
        counts=counts, drops=drops, timings=stats["timings"],
        extra={"tokenizer": tokenizer.info, "sources": stats["sources"], "input_bytes": stats["input_bytes"],
               "n_files_read": stats["n_files_read"], "path": "spark" if on_spark else "in_process",
               "spark_master": ctx.spark().sparkContext.master if on_spark else None},
    )


STAGE = Stage("ingest", (), 1, ingest_config_slice, run_ingest_stage, extra_fingerprint=input_files_fingerprint,
              describe="read sources, normalise, tokenise, quarantine bad records")
