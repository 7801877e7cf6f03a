"""Hugging Face ``datasets``: Parquet ``input_ids`` per source + the ``interleave_datasets`` call.

Layout: ``data/<name>/part-NNNNN.parquet``, one row per window, column ``input_ids``
(``list<uint16|uint32>`` of S ids; the model shifts labels inside the row). ``interleave.json``
holds the ``load_dataset("parquet", data_files=..., split="train")`` arguments per source and the
``interleave_datasets`` keyword arguments.

Weights. ``interleave_datasets`` has no notion of epochs: ``all_exhausted`` oversamples until every
source was seen once, ``first_exhausted`` undersamples. To get the planned counts exactly, the
rows are *materialised* (default): source i gets T_i rows -- whole seeded permutations of its
windows for each full epoch, then a prefix of one more -- and the call uses
``stopping_strategy="all_exhausted_without_replacement"`` (every row exactly once; the
probabilities ``T_i / sum T`` only shape the interleaving). Disk cost: epochs x the source.
``hf_materialize=False`` writes each window once and uses ``all_exhausted`` with the same
probabilities: approximate counts, no duplication.

Similarity batching (options ``batching="similarity"``, ``global_batch_size`` B; Lory). One
dataset ``data/batched/part-NNNNN.parquet`` holds the N = sum T_i planned rows in training order
(:func:`common.similarity_order`): read in order without shuffling, rows ``[k*B, (k+1)*B)`` are
global batch k, consecutive windows of one source's ICP stream. ``interleave.json`` then has
``batched`` (the ``load_dataset`` arguments) instead of the per-source datasets and interleave call,
and the manifest reports ``batch_coherence`` (similarity vs the shuffle).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mixweave.pipeline.export.common import (
    ExportContext,
    batch_coherence_report,
    batching_option,
    fmt_weight,
    materialized_indices,
    ordered_rows,
    similarity_order,
    token_dtype,
)

MAX_FILE_BYTES = 256 << 20


def _table(rows: np.ndarray) -> pa.Table:
    n, s = rows.shape
    values = pa.array(np.ascontiguousarray(rows).reshape(-1))
    offsets = pa.array(np.arange(n + 1, dtype=np.int32 if n * s < 2**31 else np.int64) * s)
    lists = (pa.ListArray if offsets.type == pa.int32() else pa.LargeListArray).from_arrays(offsets, values)
    return pa.table({"input_ids": lists})


def _export_batched(ctx: ExportContext, tmp: Path, batch: int, dtype: np.dtype, per_file: int) -> dict[str, Any]:
    src, rows = similarity_order(ctx, batch)
    (tmp / "data" / "batched").mkdir(parents=True)
    files, refs = [], []
    for part, lo in enumerate(range(0, max(src.size, 1), per_file)):  # memory: one output file
        rel = f"data/batched/part-{part:05d}.parquet"
        pq.write_table(_table(ordered_rows(ctx, src[lo:lo + per_file], rows[lo:lo + per_file], dtype)), tmp / rel)
        files.append(rel)
        refs.append(ctx.ref(rel))
    counts = {n: int((src == i).sum()) for i, n in enumerate(ctx.names) if (src == i).any()}
    call = {"batched": {"path": "parquet", "data_files": refs, "split": "train"}, "batching": "similarity",
            "global_batch_size": batch, "read": "in order, no shuffle: rows [k*B, (k+1)*B) are global batch k",
            "rows": counts, "column": "input_ids", "seq_len": ctx.seq_len, "vocab_size": ctx.vocab_size,
            "sink_id": ctx.sink_id}
    (tmp / "interleave.json").write_text(json.dumps(call, indent=2) + "\n", encoding="utf-8")
    return {"dtype": str(dtype), "materialized": True, "rows": counts, "batching": "similarity",
            "global_batch_size": batch, "batch_coherence": batch_coherence_report(ctx, batch),
            "window": ctx.window_convention("S") + "; one row per window", "sink_id": ctx.sink_id,
            "files": files + ["interleave.json"]}


def export_hf(ctx: ExportContext, tmp: Path) -> dict[str, Any]:
    dtype = token_dtype(ctx.vocab_size)
    batch = batching_option(ctx)
    if batch is not None:
        per_file = max(1, int(ctx.options.get("max_file_bytes", MAX_FILE_BYTES)) // (ctx.seq_len * dtype.itemsize))
        return _export_batched(ctx, tmp, batch, dtype, per_file)
    materialize = bool(ctx.options.get("hf_materialize", True))
    per_file = max(1, int(ctx.options.get("max_file_bytes", MAX_FILE_BYTES)) // (ctx.seq_len * dtype.itemsize))
    files, data_files, rows_out = [], {}, {}
    sources = ctx.active() if materialize else list(ctx.names)
    for i, name in enumerate(ctx.names):
        if name not in sources:
            continue
        n = ctx.n_windows(name)
        rows = None
        if materialize:
            rows = materialized_indices(n, ctx.plan.source(name).target_windows, ctx.plan.seed, i)
        n_out = n if rows is None else int(rows.size)
        (tmp / "data" / name).mkdir(parents=True)
        data_files[name] = []
        for part, lo in enumerate(range(0, max(n_out, 1), per_file)):  # memory: one output file
            rel = f"data/{name}/part-{part:05d}.parquet"
            block = (ctx.windows_s_range(name, dtype, lo, lo + per_file) if rows is None
                     else ctx.windows_s_take(name, dtype, rows[lo:lo + per_file]))
            pq.write_table(_table(block), tmp / rel)
            files.append(rel)
            data_files[name].append(ctx.ref(rel))
        rows_out[name] = n_out
    weights = ctx.plan.realized_weights
    active = ctx.active()
    call = {
        "datasets": {n: {"path": "parquet", "data_files": data_files[n], "split": "train"} for n in active},
        "interleave_datasets": {
            "probabilities": [float(fmt_weight(weights[n])) for n in active],
            "seed": ctx.plan.seed,
            "stopping_strategy": "all_exhausted_without_replacement" if materialize else "all_exhausted",
        },
        "order": active,
        "rows": {n: rows_out[n] for n in active},
        "column": "input_ids",
        "seq_len": ctx.seq_len,
        "vocab_size": ctx.vocab_size,
        "sink_id": ctx.sink_id,  # the attention-sink token at position 0 of every row (null: none)
    }
    (tmp / "interleave.json").write_text(json.dumps(call, indent=2) + "\n", encoding="utf-8")
    return {"dtype": str(dtype), "materialized": materialize, "rows": rows_out,
            "probabilities": dict(zip(active, call["interleave_datasets"]["probabilities"])),
            "stopping_strategy": call["interleave_datasets"]["stopping_strategy"],
            "window": ctx.window_convention("S") + "; one row per window", "sink_id": ctx.sink_id,
            "files": files + ["interleave.json"]}
