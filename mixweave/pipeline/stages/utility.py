"""The ``utility`` stage: a source x benchmark utility table for UtiliMax / weakest-link.

Thin wrapper over :mod:`mixweave.utility`: documents come from the ingest artifact
(sampled per source with seeded hash keys, so the sample does not depend on partitioning),
benchmarks from ``benchmarks:``. ``method: table`` adopts an existing table instead. MEDU's rating
cache lives beside the stage folder (``utility.medu-cache.sqlite``) so a crashed run resumes.

Reuse: with ``method: embedding`` and an ``order`` section whose ``encoder`` and ``max_tokens``
equal the utility's, the sampled documents' vectors are read from the ``embed`` artifact (which
then becomes an input of this stage) instead of being encoded a second time; only the benchmark
examples are encoded here.

Failure policy: nothing is committed (so a re-run tries again) when every LLM rating request
failed, or when any source x benchmark cell ends with no rated document (it would reach the mixer
as NaN); the error names the cells, the counts and the first error. Cells where only some ratings
failed are committed with their smaller ``n`` and a warning (``--force`` retries them). The
manifest's config and every written file are scrubbed of credentials (API key, URL userinfo,
secret query parameters).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ...data.artifacts import docs_files_by_source, read_source_column
from ...data.manifest import require_manifest, sha256_file
from ...data.typed import to_plain
from ..config import RunConfig
from ..runner import Stage, StageContext, StageResult

LOG = logging.getLogger(__name__)


def reuses_embed(config: RunConfig) -> bool:
    """True when the embed artifact holds the vectors the utility would compute: same encoder and
    max_tokens, and a lossless backend (torch, or its fp32 onnx / openvino export: per-row cosine to
    torch 1.0000, bench/embed.py; ``auto`` as resolved on this machine), since the utility embeds the
    benchmark examples with one of those (``utility.encoder_backend``: torch on CUDA, fp32 OpenVINO on CPU).
    int8 and static vectors live in other spaces (static: another dimension): not reused."""
    u, o = config.utility, config.order
    if u is None or o is None or u.method != "embedding":
        return False
    from ...retrieval.encoder_backends import REUSABLE, resolve_backend

    backend = resolve_backend("auto", o.device) if o.encoder_backend == "auto" else o.encoder_backend
    lossless = backend in REUSABLE
    return lossless and str(u.encoder) == str(o.encoder) and u.max_tokens == o.max_tokens


def utility_inputs(config: RunConfig) -> tuple[str, ...]:
    if config.utility is not None and config.utility.method == "table":
        return ()
    return ("ingest", "embed") if reuses_embed(config) else ("ingest",)


# -- vectors from the embed artifact ----------------------------------------------------------------
def embed_vectors(ingest_dir: Path, embed_dir: Path):
    """A ``doc_vectors`` function for :func:`~mixweave.utility.api.run_estimate`: the rows of
    the embed artifact for the sampled documents, or None (encode them) when the artifact does not
    line up with the ingest documents."""

    def vectors(sample: Any) -> np.ndarray | None:
        sources = np.asarray(sample.column("source").to_pylist(), dtype=object)
        ids = sample.column("doc_id")
        embeddings = require_manifest(embed_dir, "embed").get("embeddings", {})
        docs_files = docs_files_by_source(ingest_dir)
        out: np.ndarray | None = None
        for source in sorted(set(sources.tolist())):
            rows = np.flatnonzero(sources == source)
            found = _source_vectors(embed_dir, embeddings.get(source), docs_files.get(source), source,
                                    ids.take(rows))
            if found is None:
                return None
            if out is None:
                out = np.empty((len(sources), found.shape[1]), np.float32)
            out[rows] = found
        LOG.info("utility: reused %d document embeddings from %s", 0 if out is None else len(out), embed_dir)
        return out

    return vectors


def _source_vectors(embed_dir: Path, info: dict | None, files: list[Path] | None, source: str,
                    wanted: Any) -> np.ndarray | None:
    """Embeddings of the ``wanted`` doc ids of one source (its embed manifest entry ``info`` and its
    ingest ``files``), read from the memory-mapped blocks."""
    import pyarrow.compute as pc

    if not info or files is None:
        return _no_reuse(source, "the embed artifact has no vectors for it")
    all_ids = read_source_column(files, "doc_id")
    blocks = [np.load(embed_dir / rel, mmap_mode="r") for rel in info["files"]]
    if sum(b.shape[0] for b in blocks) != len(all_ids) or pc.count_distinct(all_ids).as_py() != len(all_ids):
        return _no_reuse(source, "its embeddings do not line up one to one with its ingest documents")
    pos = pc.index_in(wanted.cast(pa.string()), value_set=all_ids.cast(pa.string()))
    if pos.null_count:
        return _no_reuse(source, "some sampled documents are not in the ingest artifact the embeddings belong to")
    return _gather(blocks, pos.to_numpy(zero_copy_only=False).astype(np.int64))


def _gather(blocks: list[np.ndarray], positions: np.ndarray) -> np.ndarray:
    """Rows ``positions`` of the concatenation of ``blocks`` without concatenating them."""
    starts = np.cumsum([0] + [b.shape[0] for b in blocks])
    which = np.searchsorted(starts, positions, side="right") - 1
    out = np.empty((len(positions), blocks[0].shape[1]), np.float32)
    for k in np.unique(which):
        sel = which == k
        out[sel] = blocks[k][positions[sel] - starts[k]]
    return out


def _no_reuse(source: str, why: str) -> None:
    LOG.warning("utility: not reusing the embed artifact for source %s (%s); encoding the sample instead",
                source, why)
    return None


# -- the stage --------------------------------------------------------------------------------------
def run_utility_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ...utility.api import run_estimate, table_result, write_utility_files

    u = ctx.config.utility
    if u.method == "table":
        result = table_result(u.table)
    else:
        settings = {f.name: getattr(u, f.name) for f in dataclasses.fields(u) if f.name not in ("method", "table")}
        settings["seed"] = ctx.config.seed  # one seed per run
        doc_vectors = None
        if u.method == "embedding" and reuses_embed(ctx.config):
            doc_vectors = embed_vectors(ctx.artifact("ingest"), ctx.artifact("embed"))
        if u.method == "medu" and u.cache is None:  # beside the stage folder, so a crashed run resumes
            settings["cache"] = str(ctx.artifact("utility").parent / "utility.medu-cache.sqlite")
        docs = str(ctx.artifact("ingest"))  # the artifact: its manifest lists the docs files
        result = run_estimate(u.method, docs, ctx.config.benchmarks, doc_vectors=doc_vectors, **settings)
    write_utility_files(result, tmp)
    cost = result.cost
    return StageResult(
        counts={"rows": result.table.num_rows, "n_docs": cost.get("n_docs"), "n_sources": cost.get("n_sources"),
                "n_benchmarks": cost.get("n_benchmarks")},
        drops={"unparseable": cost.get("n_unparseable", 0), "failed": cost.get("n_failed", 0)},
        timings={"utility_s": cost.get("wall_s", {}).get("total")},
        extra={"cost": {k: cost.get(k) for k in ("method", "tokens", "flops", "ablation")}},
    )


def utility_config_slice(c: RunConfig) -> dict[str, Any]:
    """What the stage depends on, as stored in its manifest: credentials in URLs or secret-named
    settings are replaced by ``***`` (they change no result)."""
    from ...utility.secrets import scrub

    return {"utility": scrub(to_plain(c.utility)), "seed": c.seed, "benchmarks": c.benchmarks}


def files_fingerprint(c: RunConfig):
    """The table's (or benchmarks') sha256, so an edited input re-runs the stage."""
    u = c.utility
    if u is None:
        return None
    paths = [u.table] if u.method == "table" else [c.benchmarks]
    return [sha256_file(p) if p and Path(p).is_file() else p for p in paths]


STAGE = Stage("utility", utility_inputs, 1, utility_config_slice, run_utility_stage,
              extra_fingerprint=files_fingerprint, enabled=lambda c: c.utility is not None,
              describe="source x benchmark utility table")
