"""The ``pack`` stage: each source's EOS-joined stream in ICP order cut into windows of exactly S tokens.

Sources with at least ``order.distributed_min_docs`` documents are packed by Spark
(:mod:`mixweave.jobs.pack`: texts joined to the order by global index, tokenized per ordered
partition, exact window boundaries from prefix sums of per-partition token counts); smaller ones in
this process. Both write the same files byte for byte (``path`` in the manifest says which ran). The
Spark path's window metrics come from a sample of windows (``sampled: true`` in metrics.json) so
that no whole-source array is loaded. ``order.sink_token`` puts an attention-sink token at the start
of every window on both paths (:mod:`mixweave.retrieval.pack`); its id is in the manifest's windows
section and tokenizer, and the window metrics (computed from spans) never count it.

Sequence-length phases (``mix.phases``, :mod:`mixweave.mixers.long_context`): each phase whose
seq_len differs from order.seq_len or that upsamples long documents is packed from the same ICP
order (same tokens, seed, sink, plus_one) into ``phases/<phase>/``, a pack folder of its own
(``_manifest.json`` with a ``windows`` section, so every reader works on it unchanged); the main
pack's files stay byte-identical. With ``long_docs`` each source's phase windows are split into
``<source>`` and ``<source>.long`` (windows mostly of long documents), two sources of the phase
pack keeping their shuffled order, and the manifest's ``long_docs`` section records per source the
long windows and long-document tokens. Phase packs of Spark-path sources go through the Spark pack
at the phase's seq_len, long_docs split included (same bytes, same entries and statistics)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from ...data.artifacts import (
    docs_files_by_source,
    knn_shards,
    load_embeddings,
    load_keep,
    load_knn,
    load_order,
    order_files,
    read_source_texts,
)
from ...data.manifest import require_manifest, write_json_atomic
from ...data.progress import Progress
from ...data.typed import to_plain
from ...data.windows import file_windows, window_file_name, windows_section, write_windows_files
from ...errors import ConfigError
from ..runner import Stage, StageContext, StageResult, each_source
from .order import finite_metrics

LOG = logging.getLogger(__name__)


def run_pack_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ...data.tokenizer import load_tokenizer
    from ...retrieval import pack_windows, spans_table
    from ...retrieval.pack import source_seed

    o = ctx.config.order
    ingest_dir, order_dir = ctx.artifact("ingest"), ctx.artifact("order")
    ingest_manifest = require_manifest(ingest_dir, "ingest")
    sources = require_manifest(order_dir, "order")["order"]
    tokenizer = load_tokenizer(ctx.config.tokenizer.path, ctx.config.tokenizer.pattern, o.sink_token)
    sink_id = tokenizer.sink_id  # None without order.sink_token
    if (tokenizer.base_sha256 or tokenizer.sha256) != ingest_manifest["tokenizer"]["sha256"]:
        raise ConfigError("the tokenizer changed since ingest; re-run ingest (mixweave run --force --stage ingest)")
    dtype = np.dtype(tokenizer.info["dtype"])
    per_file = file_windows(o.seq_len + int(o.plus_one), o.pack_file_windows)
    phases = pack_phases(ctx.config)
    n_source = {s: int(ingest_manifest["sources"].get(s, {}).get("n_docs", 0)) for s in sources}
    if sources:
        (tmp / "metrics").mkdir(exist_ok=True)  # every source writes its metrics file here
    started = time.perf_counter()

    def on_spark(source: str) -> bool:
        return n_source[source] >= o.distributed_min_docs

    def one(source: str) -> tuple[dict, dict, dict]:
        """(the source's windows entry, its phase packs' entries and long_docs stats by phase)."""
        seed = source_seed(ctx.config.seed, source)
        phase_entries: dict[str, dict] = {}
        phase_stats: dict[str, dict] = {}
        if on_spark(source):
            from ...jobs.pack import run_spark_pack

            res = run_spark_pack(
                ctx.spark(), source=source, order_paths=order_files(order_dir, source),
                docs_files=docs_files_by_source(ingest_dir)[source], out_root=tmp, work_dir=tmp / f".{source}-pack",
                tokenizer_path=ctx.config.tokenizer.path, tokenizer_pattern=ctx.config.tokenizer.pattern,
                eos_id=tokenizer.eos_id, dtype=str(dtype), seq_len=o.seq_len, plus_one=o.plus_one,
                shuffle=o.shuffle, seed=seed, part_docs=o.shard_rows, per_file=per_file, sink_id=sink_id)
            n_windows, files, n_docs = res["n_windows"], res["files"], res["n_docs"]
            dropped, stream_tokens, path = res["dropped_tokens"], res["stream_tokens"], "spark"
            metrics = sampled_window_quality(ctx, source, tmp, n_windows, per_file)
            for phase in phases:
                phase_entries[phase.name], long_stats = spark_phase_source(
                    ctx, phase, tmp, source, seed=seed, eos_id=tokenizer.eos_id, dtype=str(dtype), sink_id=sink_id)
                if long_stats is not None:
                    phase_stats[phase.name] = long_stats
        else:
            order = load_order(order_dir, source)
            texts = read_source_texts(ingest_dir, source)
            tokens = tokenizer.encode_batch([texts[i] for i in order]) if order.size else []
            packed = pack_windows(tokens, np.arange(len(tokens)), seq_len=o.seq_len, eos_id=tokenizer.eos_id,
                                  plus_one=o.plus_one, shuffle=o.shuffle, seed=seed, dtype=dtype, sink_id=sink_id)
            spans = spans_table(packed)
            # spans refer to positions in the ordered list; map them back to the source's document index
            doc_index = pa.array(order[np.asarray(spans.column("doc").to_numpy())], pa.int64()) if len(spans) else pa.array([], pa.int64())
            spans = spans.set_column(spans.schema.get_field_index("doc"), "doc", doc_index)
            files = write_windows_files(tmp, source, packed.windows, spans, per_file=per_file)
            metrics = window_quality(ctx, source, order, packed)
            n_windows, n_docs, dropped, stream_tokens, path = (packed.n_windows, int(order.size), packed.dropped_tokens,
                                                               packed.stream_tokens, "local")
            for phase in phases:
                phase_entries[phase.name], long_stats = pack_phase_source(
                    tmp / "phases" / phase.name, source, tokens, order, seq_len=phase.window_len(o.seq_len),
                    long_docs=phase.long_docs, plus_one=o.plus_one, shuffle=o.shuffle, seed=seed,
                    eos_id=tokenizer.eos_id, dtype=dtype, sink_id=sink_id, file_setting=o.pack_file_windows)
                if long_stats is not None:
                    phase_stats[phase.name] = long_stats
        write_json_atomic(tmp / "metrics" / f"{source}.json", metrics)
        entry = {"n_windows": int(n_windows), "n_tokens": int(n_windows * o.seq_len), "files": files,
                 "dropped_tokens": int(dropped), "n_docs": int(n_docs), "stream_tokens": int(stream_tokens),
                 "window_pairwise_cosine_mean": metrics.get("window_pairwise_cosine_mean"),
                 "jump_rate": metrics.get("jump_rate"), "path": path}
        return entry, phase_entries, phase_stats

    with Progress(len(sources), unit="source", label="pack") as progress:
        results, at_once = each_source(ctx, sources, one, on_spark=on_spark,
                                       done=lambda s, r: progress.update(1, docs=r[0]["n_docs"]))
    per_source = {s: r[0] for s, r in results.items()}
    phase_sources = {p.name: {k: v for r in results.values() for k, v in r[1][p.name].items()} for p in phases}
    phase_long = {p.name: {s: r[2][p.name] for s, r in results.items() if p.name in r[2]} for p in phases}
    section = windows_section(o.seq_len, o.plus_one, tokenizer.info, per_source)
    for phase in phases:
        write_phase_manifest(tmp / "phases" / phase.name, phase, o, tokenizer.info, phase_sources[phase.name],
                             phase_long[phase.name])
    return StageResult(
        counts={"n_windows": sum(s["n_windows"] for s in per_source.values()),
                "n_tokens": sum(s["n_tokens"] for s in per_source.values())},
        timings={"pack_s": round(time.perf_counter() - started, 3), "spark_sources_at_once": at_once},
        extra={"windows": section},
    )


def pack_phases(config) -> list:
    """The phases of mix.phases that get a pack of their own (:meth:`LengthPhase.has_pack`)."""
    phases = getattr(config.mix, "phases", None) if config.mix is not None else None
    return [p for p in phases or () if p.has_pack(config.order.seq_len)]


def pack_phase_source(root: Path, source: str, tokens: list, order: np.ndarray, *, seq_len: int, long_docs,
                      plus_one: bool, shuffle: bool, seed: int, eos_id: int, dtype, sink_id: int | None,
                      file_setting: int) -> tuple[dict, dict | None]:
    """One source of a phase pack (in process): the same ordered ``tokens`` packed at ``seq_len``
    into ``root``; with ``long_docs`` split into ``<source>`` and ``<source>.long`` (empty groups
    left out). Returns (windows-section entries by source name, long_docs stats or None)."""
    from ...mixers.long_context import LONG_SUFFIX, split_rows
    from ...retrieval import pack_windows, spans_table
    from ...retrieval.pack import long_window_mask, window_long_tokens

    packed = pack_windows(tokens, np.arange(len(tokens)), seq_len=seq_len, eos_id=eos_id, plus_one=plus_one,
                          shuffle=shuffle, seed=seed, dtype=dtype, sink_id=sink_id)
    per_file = file_windows(seq_len + int(plus_one), file_setting)
    spans = spans_table(packed)
    doc_index = order[packed.span_doc] if packed.span_doc.size else np.zeros(0, np.int64)
    spans = spans.set_column(spans.schema.get_field_index("doc"), "doc", pa.array(doc_index, pa.int64()))
    if long_docs is None:
        files = write_windows_files(root, source, packed.windows, spans, per_file=per_file)
        return {source: {"n_windows": packed.n_windows, "n_tokens": packed.n_windows * seq_len, "files": files,
                         "dropped_tokens": int(packed.dropped_tokens), "n_docs": int(order.size),
                         "stream_tokens": int(packed.stream_tokens), "path": "local"}}, None
    doc_tokens = np.fromiter((len(t) for t in tokens), np.int64, len(tokens))
    long_tok, stream_tok = window_long_tokens(packed.span_window, packed.span_doc, packed.span_start, packed.span_end,
                                              doc_tokens, packed.n_windows, long_docs.min_tokens)
    mask = long_window_mask(long_tok, stream_tok)
    new_id, span_long = split_rows(packed.span_window, mask)
    entries = {}
    for name, rows, sel in ((source, ~mask, ~span_long), (source + LONG_SUFFIX, mask, span_long)):
        n = int(rows.sum())
        if n == 0:
            continue
        part = spans.filter(pa.array(sel))
        part = part.set_column(0, "window_id", pa.array(new_id[sel], pa.int64()))
        files = write_windows_files(root, name, packed.windows[rows], part, per_file=per_file)
        is_main = name == source
        entries[name] = {"n_windows": n, "n_tokens": n * seq_len, "files": files,
                         "dropped_tokens": int(packed.dropped_tokens) if is_main else 0,
                         "n_docs": int(np.unique(doc_index[sel]).size),
                         "stream_tokens": int(packed.stream_tokens) if is_main else int(stream_tok[rows].sum()),
                         "path": "local"}
    stats = {"n_windows": packed.n_windows, "n_long_windows": int(mask.sum()),
             "long_doc_tokens": int(long_tok.sum()), "window_stream_tokens": int(stream_tok.sum()),
             "long_window_long_doc_tokens": int(long_tok[mask].sum()),
             "long_window_stream_tokens": int(stream_tok[mask].sum()),
             "long_docs": int((doc_tokens >= long_docs.min_tokens).sum())}
    return entries, stats


def spark_phase_source(ctx: StageContext, phase, tmp: Path, source: str, *, seed: int, eos_id: int, dtype: str,
                       sink_id: int | None) -> tuple[dict, dict | None]:
    """One Spark-path source of a phase pack: the Spark pack at the phase's seq_len, with its
    long_docs split (``jobs.pack.run_spark_pack``); the same files and entries as
    :func:`pack_phase_source` in process. Returns (windows-section entries by source name, long_docs
    stats or None)."""
    from ...jobs.pack import run_spark_pack
    from ...mixers.long_context import LONG_SUFFIX

    o = ctx.config.order
    seq_len = phase.window_len(o.seq_len)
    root = tmp / "phases" / phase.name
    long_docs = phase.long_docs
    res = run_spark_pack(
        ctx.spark(), source=source, order_paths=order_files(ctx.artifact("order"), source),
        docs_files=docs_files_by_source(ctx.artifact("ingest"))[source], out_root=root,
        work_dir=tmp / f".{source}-{phase.name}-pack", tokenizer_path=ctx.config.tokenizer.path,
        tokenizer_pattern=ctx.config.tokenizer.pattern, eos_id=eos_id, dtype=dtype, seq_len=seq_len,
        plus_one=o.plus_one, shuffle=o.shuffle, seed=seed, part_docs=o.shard_rows,
        per_file=file_windows(seq_len + int(o.plus_one), o.pack_file_windows), sink_id=sink_id,
        long_min_tokens=None if long_docs is None else int(long_docs.min_tokens),
        long_name=None if long_docs is None else source + LONG_SUFFIX)
    if long_docs is not None:
        return res["groups"], res["long_docs"]
    return {source: {"n_windows": int(res["n_windows"]), "n_tokens": int(res["n_windows"]) * seq_len,
                     "files": res["files"], "dropped_tokens": int(res["dropped_tokens"]), "n_docs": int(res["n_docs"]),
                     "stream_tokens": int(res["stream_tokens"]), "path": "spark"}}, None


def write_phase_manifest(root: Path, phase, o, tokenizer_info: dict, sources: dict, long_stats: dict) -> None:
    """``phases/<phase>/_manifest.json``: a pack manifest of its own (files, a ``windows`` section
    like the main pack's, and with long_docs a ``long_docs`` section per source)."""
    from ...data.manifest import MANIFEST_NAME, build_manifest

    seq_len = phase.window_len(o.seq_len)
    root.mkdir(parents=True, exist_ok=True)
    extra = {"windows": windows_section(seq_len, o.plus_one, tokenizer_info, sources), "phase": phase.name}
    if phase.long_docs is not None:
        extra["long_docs"] = {"min_tokens": int(phase.long_docs.min_tokens), "sources": dict(sorted(long_stats.items()))}
    config = {"phase": phase.name, "seq_len": seq_len, "plus_one": o.plus_one,  # what the pack depends on (not upsample)
              "long_docs_min_tokens": None if phase.long_docs is None else phase.long_docs.min_tokens}
    manifest = build_manifest(stage="pack", stage_version=1, config=config, fingerprint_value="", inputs={}, root=root,
                              counts={"n_windows": sum(s["n_windows"] for s in sources.values())}, extra=extra)
    write_json_atomic(root / MANIFEST_NAME, manifest)


SAMPLE_WINDOWS = 512
"""Windows (the first output rows: a random sample when windows are shuffled) behind the Spark path's metrics."""


def sampled_window_quality(ctx: StageContext, source: str, pack_root: Path, n_windows: int, per_file: int) -> dict:
    """Window metrics of the Spark path from the first :data:`SAMPLE_WINDOWS` output windows: their
    spans, the embeddings and kNN rows of their documents only (positioned reads of their rows, never
    a whole source). ``jump_rate`` = share of consecutive documents inside sampled windows that are not kNN
    neighbours (the order's jump rate measured where the windows cut it); the stream-order window
    metric needs every window and is left out. Marked ``sampled``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ...data.artifacts import Blocks, RowReader
    from ...retrieval.metrics import edge_lookup, random_pair_cosines, window_metrics

    m = min(int(n_windows), SAMPLE_WINDOWS)
    if m == 0:
        return {"n_windows": int(n_windows), "sampled": True, "sample_windows": 0}
    tables = []
    for index in range(-(-m // per_file)):  # file b holds windows [b * per_file, (b + 1) * per_file)
        t = pq.read_table(pack_root / window_file_name("spans", source, index))
        tables.append(t.filter(pc.less(t.column("window_id"), m)))
    spans = pa.concat_tables(tables)
    sw = spans.column("window_id").to_numpy().astype(np.int64)
    sd_global = spans.column("doc").to_numpy().astype(np.int64)
    docs = np.unique(sd_global)
    sd = np.searchsorted(docs, sd_global)
    manifest = require_manifest(ctx.artifact("embed"), "embed")["embeddings"][source]
    # positioned reads of the sampled rows (RowReader mapped=False): indexing memory maps faulted pages
    # around every sampled row into the driver (the 10^6 scale run's pack driver: 940 MB, 10^5: 347 MB)
    X = RowReader(Blocks.from_files([ctx.artifact("embed") / rel for rel in manifest["files"]]), mapped=False).rows(docs)
    shards = knn_shards(ctx.artifact("knn"), source)
    bounds = np.array([s.start for s in shards] + [shards[-1].stop], np.int64)
    I = RowReader(Blocks(tuple(str(s.I) for s in shards), bounds), mapped=False).rows(docs)
    D = RowReader(Blocks(tuple(str(s.D) for s in shards), bounds), mapped=False).rows(docs)
    pos = np.searchsorted(docs, np.maximum(I, 0)).clip(0, docs.size - 1)
    inside = (I >= 0) & (docs[pos] == I)  # neighbours among the sampled documents, renumbered
    I_local = np.where(inside, pos, -1).astype(np.int64)
    D_local = np.where(inside, D, 0).astype(np.float32)
    lookup = edge_lookup(I_local, D_local)
    pairs = random_pair_cosines(X, seed=ctx.config.seed)
    cos_floor = float(np.quantile(pairs, 0.9)) if pairs.size else 0.0
    metrics = window_metrics(X, sw, sd, np.arange(m), lookup, cos_floor)
    metrics.pop("adjacent_window_centroid_cosine_stream", None)
    same = sw[1:] == sw[:-1]
    is_edge, _ = lookup(sd[:-1][same], sd[1:][same])
    metrics.update({"n_windows": int(n_windows), "sampled": True, "sample_windows": m, "sample_docs": int(docs.size),
                    "jump_rate": float((~is_edge).mean()) if is_edge.size else 0.0})
    return finite_metrics(metrics)


def window_quality(ctx: StageContext, source: str, order: np.ndarray, packed) -> dict:
    """Order metrics including the window ones (coherence inside windows, diversity between
    adjacent windows) for one source; ``order`` holds source doc indices, ``packed`` was built
    from the ordered documents (span_doc = position in ``order``)."""
    import dataclasses

    from ...retrieval import order_metrics, restrict_knn

    keep = load_keep(ctx.artifact("dedup"), source)
    kept_index = np.flatnonzero(keep)
    if kept_index.size < 3 or packed.n_windows == 0:
        return {"n_docs": int(kept_index.size), "n_windows": packed.n_windows}
    I, D = load_knn(ctx.artifact("knn"), source)
    I_k, D_k = restrict_knn(I, D, keep)
    X = load_embeddings(ctx.artifact("embed"), source)[kept_index]
    path = np.searchsorted(kept_index, order)  # order in the kept numbering
    remapped = dataclasses.replace(packed, span_doc=path[packed.span_doc])
    metrics = order_metrics(X, path, I_k, D_k, packed=remapped, seed=ctx.config.seed)
    metrics["n_windows"] = packed.n_windows
    return finite_metrics(metrics)


def _pack_settings(c) -> dict:
    """The settings the pack depends on (the sink only when set, so packs without one keep their fingerprint)."""
    settings = {"seq_len": c.order.seq_len, "plus_one": c.order.plus_one, "shuffle": c.order.shuffle,
                "seed": c.seed, "tokenizer": to_plain(c.tokenizer), "file_windows": c.order.pack_file_windows}
    if c.order.sink_token is not None:
        settings["sink_token"] = c.order.sink_token
    phases = pack_phases(c)
    if phases:  # only when set, so packs without phases keep their fingerprint
        settings["phases"] = [{"name": p.name, "seq_len": p.window_len(c.order.seq_len),
                               "long_docs_min_tokens": None if p.long_docs is None else p.long_docs.min_tokens}
                              for p in phases]
    return settings


STAGE = Stage("pack", ("ingest", "order", "knn", "dedup", "embed"), 1, _pack_settings,
              run_pack_stage, enabled=lambda c: c.order is not None, describe="EOS-joined stream cut into exact windows")
