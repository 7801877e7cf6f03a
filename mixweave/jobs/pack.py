"""Spark pack: ordered partitions -> exact S-token windows, equal to the in-process pack.

The order stage's files (``data.artifacts.order_files``), cut into pieces of at most ``part_docs``
positions, are the ordered partitions ``p = 0..P-1``. Four Spark steps, the driver holding one row
of metadata per partition and per output file, never per document or window:

1. **Texts by global index.** One task per (ingest file, row group) yields ``(gidx, text)``, the
   global index coming from the files' row counts (parquet footers); one task per partition yields
   ``(gidx, part, pos)`` from its slice of the order file. A join on ``gidx``, a repartition by
   ``part`` sorted by ``(part, pos)``, and each task tokenizes its partitions (tokenizer loaded once
   per worker) and writes a token shard ``tok-PPPPP.npz`` (flat ids, lengths, global indices) to
   the work folder; it returns ``(part, n_docs, n_tokens)``.
2. **Prefix sums on the driver.** Stream offset of each partition = sum of the earlier ones' tokens
   plus one EOS per document; the total fixes W, the dropped tail, and for each partition the
   stream windows that *start* in it, ``[ceil(base/S), ceil(end/S))``, and the following partitions
   that hold its spill (at most S + 1 tokens, so a bounded list). With an attention-sink token the
   stream advances S - 1 tokens a window and each cut window gets the sink in front.
3. **Cut and write.** One task per partition loads its shard and the spill shards and calls
   :func:`mixweave.retrieval.pack.cut_windows` (the in-process pack's own core) for its windows;
   each window's output row is :func:`~mixweave.retrieval.pack.shuffled_rows` of its stream index
   (a Feistel bijection: no permutation array). Window and span rows are repartitioned by output
   file ``window_id // per_file``, sorted by ``(file, kind, window_id, start)``, and each task
   writes its files through ``data.windows.write_window_block``, the in-process pack's writer:
   same rows, same bytes.

Every result is a function of the data and the settings (partitions come from the order files and
``part_docs``, files from ``per_file``, ties impossible since keys are unique), never of Spark's
partitioning. Memory per task: one partition's texts and tokens (+ <= S + 1 spill tokens), or one
output file. Cost: one join of the order with the source's texts (a shuffle of the texts), one
tokenization, one shuffle of the windows into output order.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from ..errors import InputError
from .batches import grouped

LOG = logging.getLogger(__name__)

PART_SCHEMA = pa.schema([("part", pa.int64()), ("path", pa.string()), ("lo", pa.int64()), ("hi", pa.int64())])
UNIT_SCHEMA = pa.schema([("docs_file", pa.string()), ("row_group", pa.int64()), ("base", pa.int64())])
POS_SCHEMA = pa.schema([("gidx", pa.int64()), ("part", pa.int64()), ("pos", pa.int64())])
TEXT_SCHEMA = pa.schema([("gidx", pa.int64()), ("text", pa.large_string())])
COUNT_SCHEMA = pa.schema([("part", pa.int64()), ("n_docs", pa.int64()), ("n_tokens", pa.int64()), ("n_long", pa.int64())])
CUT_SCHEMA = pa.schema([("part", pa.int64()), ("base", pa.int64()), ("lo", pa.int64()), ("hi", pa.int64()),
                        ("spill", pa.list_(pa.int64()))])
ROW_SCHEMA = pa.schema([("block", pa.int64()), ("kind", pa.int8()), ("window_id", pa.int64()), ("start", pa.int32()),
                        ("tokens", pa.list_(pa.int32())), ("doc", pa.int64()), ("end", pa.int32()),
                        ("doc_offset", pa.int32()), ("long", pa.int8()), ("long_tokens", pa.int64()),
                        ("stream_tokens", pa.int64())])
"""A window (kind 0: tokens; with long documents: its long-document and stream tokens) or a span
(kind 1: start, doc, end, doc_offset) bound for output file ``block``; ``long`` 1 marks a long
window and its spans (always 0 without long documents)."""
SPAN_SCHEMA = pa.schema([("window_id", pa.int64()), ("doc", pa.int64()), ("start", pa.int32()),
                         ("end", pa.int32()), ("doc_offset", pa.int32())])
WRITE_DONE = pa.schema([("block", pa.int64()), ("windows", pa.int64()), ("spans", pa.int64())])


PART_DOCS_MAX = 16_384
"""Documents per pack partition at most, whatever ``part_docs`` (the stage passes ``order.shard_rows``):
a task holds its partition's texts and tokens (~56 KB a document measured at 50,000-document
partitions: 2.8 GB), so this bounds it near 0.9 GB. The output does not depend on the cut."""


def plan_parts(order_paths: list[Path], part_docs: int) -> list[dict]:
    """Ordered partitions: each order file cut into pieces of at most ``part_docs`` positions
    (shapes read from the ``.npy`` headers; empty files give no partition)."""
    parts = []
    for path in order_paths:
        n = int(np.load(path, mmap_mode="r").shape[0])
        for lo in range(0, n, max(1, int(part_docs))):
            parts.append({"part": len(parts), "path": str(Path(path).resolve()), "lo": lo, "hi": min(n, lo + part_docs)})
    return parts


def plan_text_units(docs_files: list[Path]) -> list[dict]:
    """One unit per (ingest file, row group) with the global index of its first row."""
    import pyarrow.parquet as pq

    units, base = [], 0
    for path in docs_files:
        meta = pq.ParquetFile(path).metadata
        for group in range(meta.num_row_groups):
            units.append({"docs_file": str(Path(path).resolve()), "row_group": group, "base": base})
            base += meta.row_group(group).num_rows
    return units


def plan_cuts(counts: dict[int, tuple[int, int]], n_parts: int, *, seq_len: int, plus_one: bool,
              sink: bool = False) -> tuple[list[dict], dict]:
    """Prefix sums over the partitions' ``(n_docs, n_tokens)``: the windows each partition cuts
    (those starting in its stream range) and the partitions that hold their spill. ``sink``: every
    window is a sink token + S - 1 stream tokens, so the stream advances S - 1 a window."""
    from ..retrieval.pack import n_stream_windows, stream_step

    S, extra = stream_step(seq_len, sink), int(bool(plus_one))
    seg = np.array([counts.get(p, (0, 0))[0] + counts.get(p, (0, 0))[1] for p in range(n_parts)], np.int64)
    base = np.zeros(n_parts + 1, np.int64)
    np.cumsum(seg, out=base[1:])
    total = int(base[-1])
    n_win = n_stream_windows(total, S, bool(extra))  # S is already the stream step here
    cuts = []
    for p in range(n_parts):
        lo = -(-int(base[p]) // S)
        hi = min(n_win, -(-int(base[p + 1]) // S))
        if hi <= lo:
            continue
        need = hi * S + extra  # the last window's end
        spill, q = [], p + 1
        while q < n_parts and base[q] < need:
            if seg[q]:
                spill.append(q)
            q += 1
        cuts.append({"part": p, "base": int(base[p]), "lo": lo, "hi": hi, "spill": spill})
    used = n_win * S + extra if n_win else 0
    return cuts, {"n_windows": n_win, "stream_tokens": total, "dropped_tokens": total - used,
                  "n_docs": int(sum(c[0] for c in counts.values()))}


def _frame(spark, rows: list[dict], schema: pa.Schema):
    """A small driver-side DataFrame of metadata rows (one per partition/unit/file)."""
    from .ingest import spark_schema

    return spark.createDataFrame([tuple(r[name] for name in schema.names) for r in rows], spark_schema(schema))


def _shard_path(work: str, part: int) -> str:
    return f"{work}/tok-{part:05d}.npz"


def _order_positions(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        for row in batch.to_pylist():
            gidx = np.asarray(np.load(row["path"], mmap_mode="r")[row["lo"]:row["hi"]], np.int64)
            yield pa.RecordBatch.from_arrays([pa.array(gidx), pa.array(np.full(gidx.size, row["part"], np.int64)),
                                              pa.array(np.arange(gidx.size, dtype=np.int64))], schema=POS_SCHEMA)


def _read_texts(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    for batch in batches:
        for row in batch.to_pylist():
            text = pq.ParquetFile(row["docs_file"]).read_row_group(row["row_group"], columns=["text"]).column("text")
            text = text.cast(pa.large_string()).combine_chunks()
            gidx = pa.array(np.arange(row["base"], row["base"] + len(text), dtype=np.int64))
            yield pa.RecordBatch.from_arrays([gidx, text], schema=TEXT_SCHEMA)


def _tokenize_parts(work: str, tokenizer_path: str, tokenizer_pattern: str | None, expected: dict[int, int],
                    long_min_tokens: int | None = None):
    def flush(part, texts, gidx, tokenizer):
        if len(texts) != expected.get(part, -1):
            raise RuntimeError(f"pack: partition {part} found {len(texts)} of its {expected.get(part)} documents' texts "
                               "(the order refers to documents the ingest artifact does not have)")
        ids = tokenizer.encode_batch(texts)
        lengths = np.fromiter((len(t) for t in ids), np.int64, len(ids))
        flat = np.concatenate([np.asarray(t, np.int32) for t in ids]) if ids else np.zeros(0, np.int32)
        np.savez(_shard_path(work, part), tokens=flat, lengths=lengths, gidx=np.asarray(gidx, np.int64))
        n_long = int((lengths >= long_min_tokens).sum()) if long_min_tokens is not None else 0
        return {"part": part, "n_docs": len(texts), "n_tokens": int(lengths.sum()), "n_long": n_long}

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from ..data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(tokenizer_path, tokenizer_pattern)  # cached per worker process
        part, texts, gidx, last_pos = None, [], [], -1
        for batch in batches:  # sorted by (part, pos): one partition's texts at a time
            parts = batch.column("part").to_numpy()
            pos = batch.column("pos").to_numpy()
            ids = batch.column("gidx").to_numpy()
            text = batch.column("text").to_pylist()
            for i in range(batch.num_rows):
                if parts[i] != part:
                    if part is not None:
                        yield pa.RecordBatch.from_pylist([flush(part, texts, gidx, tokenizer)], schema=COUNT_SCHEMA)
                    part, texts, gidx, last_pos = int(parts[i]), [], [], -1
                if pos[i] != last_pos + 1:
                    raise RuntimeError(f"pack: partition {part} position {int(pos[i])} out of sequence (duplicate "
                                       "document in the order, or a document with two texts)")
                last_pos = int(pos[i])
                texts.append(text[i])
                gidx.append(int(ids[i]))
        if part is not None:
            yield pa.RecordBatch.from_pylist([flush(part, texts, gidx, tokenizer)], schema=COUNT_SCHEMA)

    return run


def _cut_parts(work: str, seq_len: int, plus_one: bool, eos_id: int, dtype: str, n_windows: int, shuffle: bool,
               seed: int, per_file: int, sink_id: int | None = None, long_min_tokens: int | None = None):
    """mapInArrow: each partition's windows (those starting in it) and their spans, as ROW_SCHEMA rows;
    with ``long_min_tokens`` each window classified long or not (:func:`~mixweave.retrieval.pack.long_window_mask`
    of its own spans: every span of a window is cut by the task that cuts the window)."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from ..retrieval.pack import cut_windows, long_window_mask, shuffled_rows, window_long_tokens

        for batch in batches:
            for row in batch.to_pylist():
                shards = [np.load(_shard_path(work, q)) for q in [row["part"], *row["spill"]]]
                flat = np.concatenate([s["tokens"] for s in shards])
                lengths = np.concatenate([s["lengths"] for s in shards])
                gidx = np.concatenate([s["gidx"] for s in shards])
                starts = np.zeros(lengths.size, np.int64)
                np.cumsum(lengths[:-1], out=starts[1:])
                cut = cut_windows(flat, starts, lengths, stream_base=row["base"], lo=row["lo"], hi=row["hi"],
                                  seq_len=seq_len, plus_one=plus_one, eos_id=eos_id, dtype=np.dtype(dtype),
                                  sink_id=sink_id)
                stream_ids = np.arange(cut.lo, cut.hi, dtype=np.int64)
                out_rows = shuffled_rows(stream_ids, n_windows, seed) if shuffle else stream_ids
                nw, width = cut.windows.shape
                local = cut.span_window - cut.lo
                if long_min_tokens is not None:
                    long_tok, stream_tok = window_long_tokens(local, cut.span_seg, cut.span_start, cut.span_end, lengths,
                                                              nw, long_min_tokens)
                    is_long = long_window_mask(long_tok, stream_tok).astype(np.int8)
                    long_col, stream_col = pa.array(long_tok), pa.array(stream_tok)
                else:
                    is_long = np.zeros(nw, np.int8)
                    long_col = stream_col = pa.nulls(nw, pa.int64())
                tokens = pa.ListArray.from_arrays(pa.array(np.arange(nw + 1, dtype=np.int32) * width),
                                                  pa.array(np.ascontiguousarray(cut.windows).reshape(-1).astype(np.int32)))
                yield pa.RecordBatch.from_arrays([
                    pa.array(out_rows // per_file), pa.array(np.zeros(nw, np.int8)), pa.array(out_rows),
                    pa.array(np.full(nw, -1, np.int32)), tokens, pa.nulls(nw, pa.int64()), pa.nulls(nw, pa.int32()),
                    pa.nulls(nw, pa.int32()), pa.array(is_long), long_col, stream_col], schema=ROW_SCHEMA)
                span_rows = out_rows[local]
                ns = span_rows.size
                yield pa.RecordBatch.from_arrays([
                    pa.array(span_rows // per_file), pa.array(np.ones(ns, np.int8)), pa.array(span_rows),
                    pa.array(cut.span_start.astype(np.int32)), pa.nulls(ns, pa.list_(pa.int32())),
                    pa.array(gidx[cut.span_seg]), pa.array(cut.span_end.astype(np.int32)),
                    pa.array(cut.span_doc_offset.astype(np.int32)), pa.array(is_long[local]),
                    pa.nulls(ns, pa.int64()), pa.nulls(ns, pa.int64())], schema=ROW_SCHEMA)

    return run


def _by_block(batches: Iterator[pa.RecordBatch]) -> Iterator[tuple[int, pa.Table]]:
    """``(block, its rows)`` for rows sorted by block (:func:`~mixweave.jobs.batches.grouped`)."""
    for table in grouped(batches, "block"):
        yield int(table.column("block")[0].as_py()), table.combine_chunks()


def _renumber(first_ids: dict[tuple[int, int], int], per_file: int):
    """mapInArrow, rows sorted by (block, kind, window_id, start): the long-documents split. Each
    window's new id is its rank among the windows of its group (short 0, long 1) in output order, i.e.
    ``first_ids[(block, group)]`` (the group's windows in earlier blocks, a prefix sum on the driver)
    plus its rank within the block; its spans follow it. Rows leave with ``window_id`` = the new id
    and ``block`` = 2 x its file + group, the key the writer reads (memory: one block)."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for block, table in _by_block(batches):
            kind = table.column("kind").to_numpy()
            n_win = int((kind == 0).sum())
            ids = table.column("window_id").to_numpy().astype(np.int64)
            group = table.column("long").to_numpy().astype(np.int64)
            new = np.empty(len(ids), np.int64)
            for g in (0, 1):
                mine = np.flatnonzero(group[:n_win] == g)
                new[mine] = first_ids.get((block, g), 0) + np.arange(mine.size)
            at = np.searchsorted(ids[:n_win], ids[n_win:])
            if (kind[:n_win] != 0).any() or (at >= n_win).any() or not np.array_equal(ids[:n_win][at], ids[n_win:]) \
                    or not np.array_equal(group[:n_win][at], group[n_win:]):
                raise RuntimeError(f"pack: block {block}'s spans do not match its windows")
            new[n_win:] = new[:n_win][at]
            table = table.set_column(0, "block", pa.array((new // per_file) * 2 + group))
            table = table.set_column(2, "window_id", pa.array(new))
            yield from table.to_batches()

    return run


def _write_blocks(out_root: str, source: str, per_file: int, dtype: str, width: int, long_name: str | None = None):
    """mapInArrow: rows sorted by (block, kind, window_id, start) -> the windows and spans files of
    each block, through the in-process pack's writers (memory: one block). With ``long_name`` the
    block key is 2 x file + group (:func:`_renumber`): group 1 is written as source ``long_name``."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from ..data.windows import write_window_block

        for key, table in _by_block(batches):
            block, name = (key // 2, (source, long_name)[key % 2]) if long_name else (key, source)
            kind = table.column("kind").to_numpy()
            n_win = int((kind == 0).sum())
            win, spans = table.slice(0, n_win), table.slice(n_win)
            ids = win.column("window_id").to_numpy()
            if (kind[:n_win] != 0).any() or not np.array_equal(ids, np.arange(block * per_file, block * per_file + n_win)):
                raise RuntimeError(f"pack: file {block} of {name} is missing windows")
            flat = win.column("tokens").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            windows = flat.astype(np.dtype(dtype)).reshape(-1, width)
            span_table = pa.Table.from_arrays([spans.column(col).cast(SPAN_SCHEMA.field(col).type)
                                               for col in SPAN_SCHEMA.names], schema=SPAN_SCHEMA)
            write_window_block(Path(out_root), name, block, windows, block * per_file, span_table)
            yield pa.RecordBatch.from_pylist([{"block": key, "windows": n_win, "spans": spans.num_rows}],
                                             schema=WRITE_DONE)

    return run


def run_spark_pack(spark, *, source: str, order_paths: list[Path], docs_files: list[Path], out_root: Path,
                   work_dir: Path, tokenizer_path: str, tokenizer_pattern: str | None, eos_id: int, dtype: str,
                   seq_len: int, plus_one: bool, shuffle: bool, seed: int, part_docs: int, per_file: int,
                   n_tasks: int | None = None, sink_id: int | None = None,
                   max_part_docs: int = PART_DOCS_MAX, long_min_tokens: int | None = None,
                   long_name: str | None = None) -> dict:
    """Pack one source with Spark (module docstring) into ``out_root`` (the pack stage's folder):
    ``windows/<source>/part-*.parquet`` and ``spans/<source>/part-*.parquet``, the same files as
    the in-process pack with ``per_file`` windows per file. ``work_dir`` (executor-readable, removed
    afterwards) holds the token shards and the cut windows. ``sink_id``: every window starts with
    this attention-sink token (:mod:`mixweave.retrieval.pack`). Partitions hold at most
    ``min(part_docs, max_part_docs)`` documents (:data:`PART_DOCS_MAX`). Returns the per-source summary
    (n_windows, stream_tokens, dropped_tokens, n_docs, files, partitions, timings).

    With ``long_min_tokens`` (a phase's ``long_docs``) the windows are split as the in-process phase
    pack splits them: each cut task classifies its windows, one aggregation counts each output
    block's windows per group, and :func:`_renumber` gives each group's windows ids 0.. in output
    order before the write; group 1 is written as source ``long_name``. The summary then has
    ``groups`` (the windows-section entry of each non-empty group) and ``long_docs`` (the manifest's
    statistics). Cost: the cut rows are checkpointed and shuffled twice instead of once."""
    from ..data.progress import spark_progress
    from ..data.windows import file_windows, window_file_name, write_window_block
    from .ingest import spark_schema

    t0 = time.perf_counter()
    width = int(seq_len) + int(bool(plus_one))
    per_file = file_windows(width, per_file)
    work = Path(work_dir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    parts = plan_parts(order_paths, min(int(part_docs), int(max_part_docs)))  # task memory: <= max_part_docs docs
    units = plan_text_units(docs_files)
    tasks = int(n_tasks or max(1, min(max(len(parts), 1), 4 * spark.sparkContext.defaultParallelism)))
    if (long_min_tokens is None) != (long_name is None):
        raise ValueError("long_min_tokens and long_name go together")
    counts: dict[int, tuple[int, int]] = {}
    n_long_docs, split = 0, None
    try:
        with spark_progress(spark, f"pack {source}"):
            if parts:
                if not units:
                    raise InputError(f"pack: the order of {source} lists documents but its ingest files have none")
                positions = _frame(spark, parts, PART_SCHEMA).repartition(tasks) \
                    .mapInArrow(_order_positions, spark_schema(POS_SCHEMA))
                texts = _frame(spark, units, UNIT_SCHEMA).repartition(max(1, min(len(units), tasks))).mapInArrow(_read_texts, spark_schema(TEXT_SCHEMA))
                expected = {p["part"]: p["hi"] - p["lo"] for p in parts}
                done = positions.join(texts, "gidx").repartition(tasks, "part").sortWithinPartitions("part", "pos") \
                    .mapInArrow(_tokenize_parts(str(work), tokenizer_path, tokenizer_pattern, expected, long_min_tokens),
                                spark_schema(COUNT_SCHEMA)).collect()
                counts = {int(r["part"]): (int(r["n_docs"]), int(r["n_tokens"])) for r in done}
                n_long_docs = sum(int(r["n_long"]) for r in done)
                missing = sorted(set(expected) - set(counts))
                if missing:
                    raise RuntimeError(f"pack: partitions {missing[:5]} of {source} found none of their documents' texts")
            t_tok = time.perf_counter()
            cuts, summary = plan_cuts(counts, len(parts), seq_len=seq_len, plus_one=plus_one, sink=sink_id is not None)
            n_win = summary["n_windows"]
            n_files = max(1, math.ceil(n_win / per_file))
            if n_win:  # cut per partition, shuffle the rows to their output files, write each file
                rows = _frame(spark, cuts, CUT_SCHEMA).repartition(max(1, min(len(cuts), tasks))) \
                    .mapInArrow(_cut_parts(str(work), seq_len, plus_one, eos_id, dtype, n_win, shuffle, seed, per_file,
                                           sink_id, long_min_tokens),
                                spark_schema(ROW_SCHEMA))
                if long_name is not None:
                    rows, split = _split_long(rows.localCheckpoint(), n_win, per_file, tasks)
                    keys = sorted(2 * b + g for g, n in enumerate(split["n_windows"]) for b in range(math.ceil(n / per_file)))
                else:
                    keys = list(range(n_files))
                written = rows.repartition(max(1, min(len(keys), tasks)), "block") \
                    .sortWithinPartitions("block", "kind", "window_id", "start") \
                    .mapInArrow(_write_blocks(str(Path(out_root).resolve()), source, per_file, dtype, width, long_name),
                                spark_schema(WRITE_DONE)).collect()
                if sorted(int(r["block"]) for r in written) != keys or sum(int(r["windows"]) for r in written) != n_win:
                    raise RuntimeError(f"pack: wrote {len(written)} of {len(keys)} files of {source}")
            elif long_name is not None:  # no window: no group, no file (as the in-process phase pack)
                split = _no_split()
            else:  # no window: one empty file, as the in-process pack writes
                empty = pa.Table.from_pylist([], schema=SPAN_SCHEMA)
                write_window_block(Path(out_root), source, 0, np.zeros((0, width), np.dtype(dtype)), 0, empty)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t_end = time.perf_counter()
    LOG.info("pack %s (spark): %d partitions, %d docs, %d tokens -> %d windows in %d files (%.1fs)", source,
             len(parts), summary["n_docs"], summary["stream_tokens"], n_win, n_files, t_end - t0)
    out = {**summary, "files": [window_file_name("windows", source, b) for b in range(n_files)],
           "partitions": len(parts), "spark_tasks": tasks,
           "timings": {"tokenize_s": round(t_tok - t0, 3), "cut_write_s": round(t_end - t_tok, 3)}}
    if split is not None:
        out["groups"], out["long_docs"] = _group_entries(source, long_name, summary, split, seq_len, per_file, n_long_docs)
    return out


def _no_split() -> dict:
    """Per-group (short, long) counts of a long-documents split with no window yet."""
    return {"n_windows": [0, 0], "n_docs": [0, 0], "long_tokens": [0, 0], "stream_tokens": [0, 0]}


def _split_long(rows, n_windows: int, per_file: int, tasks: int):
    """The cut rows renumbered per group (:func:`_renumber`); returns (rows, per-group counts: windows,
    distinct documents, long-document and stream tokens). Two small aggregations on the driver: one
    row per (block, group), one per group."""
    from pyspark.sql import functions as F

    from .ingest import spark_schema

    windows = rows.where(F.col("kind") == 0)
    per_block = windows.groupBy("block", "long").agg(F.count(F.lit(1)).alias("n"), F.sum("long_tokens").alias("lt"),
                                                     F.sum("stream_tokens").alias("st")).collect()
    docs = rows.where(F.col("kind") == 1).select("long", "doc").distinct().groupBy("long").count().collect()
    split = _no_split()
    first_ids, seen = {}, split["n_windows"]
    for r in sorted(per_block, key=lambda r: (int(r["block"]), int(r["long"]))):
        g = int(r["long"])
        first_ids[(int(r["block"]), g)] = seen[g]
        seen[g] += int(r["n"])
        split["long_tokens"][g] += int(r["lt"])
        split["stream_tokens"][g] += int(r["st"])
    for r in docs:
        split["n_docs"][int(r["long"])] = int(r["count"])
    if sum(seen) != n_windows:
        raise RuntimeError(f"pack: the long-documents split counted {sum(seen)} of {n_windows} windows")
    renumbered = rows.repartition(max(1, min(math.ceil(n_windows / per_file), tasks)), "block") \
        .sortWithinPartitions("block", "kind", "window_id", "start") \
        .mapInArrow(_renumber(first_ids, per_file), spark_schema(ROW_SCHEMA))
    return renumbered, split


def _group_entries(source: str, long_name: str, summary: dict, split: dict, seq_len: int, per_file: int,
                   n_long_docs: int) -> tuple[dict, dict]:
    """The windows-section entries of the two groups (empty groups left out) and the long_docs
    statistics, as ``pipeline.stages.pack.pack_phase_source`` writes them in process."""
    from ..data.windows import window_file_name

    groups = {}
    for g, name in enumerate((source, long_name)):
        n = int(split["n_windows"][g])
        if n:
            groups[name] = {"n_windows": n, "n_tokens": n * int(seq_len),
                            "files": [window_file_name("windows", name, b) for b in range(math.ceil(n / per_file))],
                            "dropped_tokens": int(summary["dropped_tokens"]) if g == 0 else 0,
                            "n_docs": int(split["n_docs"][g]),
                            "stream_tokens": int(summary["stream_tokens"]) if g == 0 else int(split["stream_tokens"][1]),
                            "path": "spark"}
    stats = {"n_windows": int(summary["n_windows"]), "n_long_windows": int(split["n_windows"][1]),
             "long_doc_tokens": int(sum(split["long_tokens"])), "window_stream_tokens": int(sum(split["stream_tokens"])),
             "long_window_long_doc_tokens": int(split["long_tokens"][1]),
             "long_window_stream_tokens": int(split["stream_tokens"][1]), "long_docs": int(n_long_docs)}
    return groups, stats
