"""MosaicML Streaming (MDS) shards + ``index.json`` per source, and the llm-foundry streams YAML.

Layout (streaming 0.13 ``MDSWriter`` byte for byte, written directly so that mosaicml-streaming
is not a dependency): per source ``<name>/shard.NNNNN.mds`` = ``uint32 n``, ``uint32
offsets[n+1]`` (absolute), the JSON shard config, then the samples; one column ``tokens`` with
encoding ``ndarray:<uint16|uint32>:S`` -- fixed size, so a sample is just its S token ids. Shards
are cut exactly where MDSWriter would cut them (``size_limit``, default 64 MiB). ``index.json`` =
``{"version": 2, "shards": [...]}``.

Weights (``streams.yaml``, the ``train_loader.dataset`` of llm-foundry's ``text`` loader):
``choose: T_i`` per stream (default) -- absolute samples per epoch, so repetition (T_i > W_i) and
downsampling come out exactly -- or ``proportion: T_i / sum T`` with ``epoch_size: sum T``
(option ``mds_weighting="proportion"``). Never mix the two kinds.

Similarity batching (options ``batching="similarity"``, ``global_batch_size`` B; Lory): one stream
``batched/`` holds the N = sum T_i planned rows in training order (:func:`common.similarity_order`)
and ``streams.yaml`` reads it with ``shuffle: false``: samples ``[k*B, (k+1)*B)`` are global batch k,
consecutive windows of one source's ICP stream (set llm-foundry's global_train_batch_size to B). The
manifest reports ``batch_coherence`` (similarity vs the shuffle).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mixweave.errors import ConfigError
from mixweave.pipeline.export.common import (
    ExportContext,
    batch_coherence_report,
    batching_option,
    dump_yaml,
    fmt_weight,
    ordered_rows,
    similarity_order,
    token_dtype,
)

SIZE_LIMIT = 1 << 26


def shard_config(encoding: str, sample_bytes: int, size_limit: int) -> dict[str, Any]:
    return {"version": 2, "format": "mds", "compression": None, "hashes": [], "size_limit": size_limit,
            "column_names": ["tokens"], "column_encodings": [encoding], "column_sizes": [sample_bytes]}


def write_mds(folder: Path, windows: np.ndarray, *, size_limit: int = SIZE_LIMIT) -> list[str]:
    """Shards + index.json for ``windows`` ([W, S], uint16/uint32); returns the shard basenames."""
    return write_mds_rows(folder, windows.shape[0], windows.shape[1], windows.dtype,
                          lambda lo, hi: windows[lo:hi], size_limit=size_limit)


def write_mds_rows(folder: Path, n_rows: int, s: int, dtype: np.dtype, read, *, size_limit: int = SIZE_LIMIT) -> list[str]:
    """:func:`write_mds` with the rows fetched shard by shard through ``read(lo, hi)`` (memory: one shard)."""
    dtype = np.dtype(dtype)
    encoding = f"ndarray:{dtype.name}:{s}"
    sample_bytes = s * dtype.itemsize
    config = shard_config(encoding, sample_bytes, size_limit)
    config_bytes = json.dumps(config, sort_keys=True).encode("utf-8")
    per_shard = max(1, (size_limit - 8 - len(config_bytes)) // (sample_bytes + 4))
    shards, names = [], []
    for k, lo in enumerate(range(0, n_rows, per_shard)):
        rows = np.ascontiguousarray(read(lo, min(n_rows, lo + per_shard)), dtype=dtype)
        n = rows.shape[0]
        header = 4 + 4 * (n + 1) + len(config_bytes)
        offsets = (header + np.arange(n + 1, dtype=np.int64) * sample_bytes).astype(np.uint32)
        basename = f"shard.{k:05d}.mds"
        with open(folder / basename, "wb") as fh:
            fh.write(np.uint32(n).tobytes() + offsets.tobytes() + config_bytes)
            rows.tofile(fh)
        size = header + n * sample_bytes
        shards.append({**config, "raw_data": {"basename": basename, "bytes": size, "hashes": {}},
                       "samples": n, "zip_data": None})
        names.append(basename)
    with open(folder / "index.json", "w", encoding="utf-8") as fh:
        json.dump({"version": 2, "shards": shards}, fh, sort_keys=True)
    return names


def _export_batched(ctx: ExportContext, tmp: Path, batch: int, dtype: np.dtype, size_limit: int) -> dict[str, Any]:
    src, rows = similarity_order(ctx, batch)
    (tmp / "batched").mkdir()
    shards = write_mds_rows(tmp / "batched", src.size, ctx.seq_len, dtype,
                            lambda lo, hi: ordered_rows(ctx, src[lo:hi], rows[lo:hi], dtype), size_limit=size_limit)
    dataset = {"max_seq_len": ctx.seq_len, "shuffle": False, "streams": {"batched": {"local": ctx.ref("batched")}}}
    header = ("# llm-foundry text loader (MosaicML Streaming) written by mixweave with similarity batching: read in "
              f"order (shuffle: false) with global_train_batch_size {batch}; column 'tokens' = "
              f"ndarray:{dtype.name}:{ctx.seq_len}.\n" + ctx.sink_note())
    (tmp / "streams.yaml").write_text(header + dump_yaml({"train_loader": {"name": "text", "dataset": dataset}}),
                                      encoding="utf-8")
    counts = {n: int((src == i).sum()) for i, n in enumerate(ctx.names) if (src == i).any()}
    return {"dtype": str(dtype), "encoding": f"ndarray:{dtype.name}:{ctx.seq_len}", "weighting": "ordered",
            "batching": "similarity", "global_batch_size": batch, "rows": counts, "epoch_size": int(src.size),
            "batch_coherence": batch_coherence_report(ctx, batch),
            "window": ctx.window_convention("S") + "; one row per window", "sink_id": ctx.sink_id,
            "files": [f"batched/{b}" for b in shards] + ["batched/index.json", "streams.yaml"]}


def export_mds(ctx: ExportContext, tmp: Path) -> dict[str, Any]:
    dtype = token_dtype(ctx.vocab_size)
    mode = ctx.options.get("mds_weighting", "choose")
    if mode not in ("choose", "proportion"):
        raise ConfigError(f"mds_weighting must be 'choose' or 'proportion', got {mode!r}")
    size_limit = int(ctx.options.get("mds_size_limit", SIZE_LIMIT))
    batch = batching_option(ctx)
    if batch is not None:
        return _export_batched(ctx, tmp, batch, dtype, size_limit)
    files, locals_ = [], {}
    for name in ctx.names:
        (tmp / name).mkdir()
        shards = write_mds_rows(tmp / name, ctx.n_windows(name), ctx.seq_len, dtype,
                                lambda lo, hi, name=name: ctx.windows_s_range(name, dtype, lo, hi), size_limit=size_limit)
        files += [f"{name}/{b}" for b in shards] + [f"{name}/index.json"]
        locals_[name] = ctx.ref(name)
    weights = ctx.plan.realized_weights
    streams = {}
    for name in ctx.active():
        stream: dict[str, Any] = {"local": locals_[name]}
        if mode == "choose":
            stream["choose"] = ctx.plan.source(name).target_windows
        else:
            stream["proportion"] = float(fmt_weight(weights[name]))
        streams[name] = stream
    dataset: dict[str, Any] = {"max_seq_len": ctx.seq_len, "shuffle": True, "shuffle_seed": ctx.plan.seed}
    if mode == "proportion":
        dataset["epoch_size"] = ctx.plan.total_windows
    dataset["streams"] = streams
    header = ("# llm-foundry text loader (MosaicML Streaming) written by mixweave; column 'tokens' "
              f"= ndarray:{dtype.name}:{ctx.seq_len}. Point 'local' (or 'remote') at where the folders live.\n"
              + ctx.sink_note())
    (tmp / "streams.yaml").write_text(header + dump_yaml({"train_loader": {"name": "text", "dataset": dataset}}),
                                      encoding="utf-8")
    return {"dtype": str(dtype), "encoding": f"ndarray:{dtype.name}:{ctx.seq_len}", "weighting": mode,
            "streams": streams, "epoch_size": ctx.plan.total_windows,
            "window": ctx.window_convention("S") + "; one row per window", "sink_id": ctx.sink_id,
            "files": files + ["streams.yaml"]}
