"""OLMo-core (and Dolma-style token files): headerless memmaps + ``.csv.gz`` + source mixture YAML.

Layout: per source ``<name>/part-NNNNN.npy`` = raw little-endian token ids (NOT ``np.save``
format: no header), uint16 when the vocabulary fits else uint32, each file a whole number of
S-token windows (OLMo-core's ``NumpyFSLDataset`` concatenates a file and cuts S-token instances,
dropping a per-file remainder -- there is none, so every instance is exactly one window). Next to
each, ``part-NNNNN.csv.gz`` with Dolma's rows ``start,end,id,src,loc`` (token offsets, end
exclusive): documents end after each EOS and at every window end, since windows are shuffled.

Mixture: ``source_mixture.yaml`` is a ``SourceMixtureDatasetConfig`` (``source_list.sources[]``
with ``source_name``, ``target_ratio = T_i / sum T``, ``paths``, ``max_repetition_ratio`` = the
mixture's epoch cap, at least the planned epochs and at least 1) plus ``requested_tokens =
S * sum T`` and ``global_batch_size = S`` (one instance per batch, so OLMo's instance rounding
is exact; set your real batch in tokens, a multiple of S). OLMo takes each source's files from
their heads and re-lists them for repetition, so which windows a downsampled source keeps is
decided by file order -- our windows are already shuffled, so the heads are a random subset.

Cost: one sequential write per source plus O(docs) for the metadata rows.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mixweave.pipeline.export.common import ExportContext, dump_yaml, fmt_weight, token_dtype

MAX_FILE_BYTES = 1 << 30


def _ceil6(x: float) -> float:
    return math.ceil(x * 1e6 - 1e-6) / 1e6


def _write_metadata(path: Path, windows: np.ndarray, eos_id: int, name: str, part: int, first_window: int) -> int:
    """Dolma rows ``start,end,id,src,loc`` (gzip CSV, no header); returns the number of documents."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    n, s = windows.shape
    flat = windows.reshape(-1)
    ends = np.union1d(np.flatnonzero(flat == eos_id) + 1, np.arange(1, n + 1, dtype=np.int64) * s)
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    ids = pc.binary_join_element_wise(pa.scalar(f"{name}-{part:05d}"),
                                      pc.cast(pa.array(np.arange(ends.size)), pa.string()), "-")
    table = pa.table({"start": starts, "end": ends, "id": ids,
                      "src": pa.repeat(pa.scalar(name), ends.size) if ends.size else pa.array([], pa.string()),
                      "loc": starts // s + first_window})
    with pa.CompressedOutputStream(str(path), "gzip") as out:
        pcsv.write_csv(table, out, pcsv.WriteOptions(include_header=False, quoting_style="none"))
    return int(ends.size)


def export_olmo(ctx: ExportContext, tmp: Path) -> dict[str, Any]:
    dtype = token_dtype(ctx.vocab_size)
    S = ctx.seq_len
    per_file = max(1, int(ctx.options.get("max_file_bytes", MAX_FILE_BYTES)) // (S * dtype.itemsize))
    paths: dict[str, list[str]] = {}
    files = []
    for name in ctx.names:
        windows = ctx.windows_s(name, dtype)
        (tmp / name).mkdir()
        paths[name] = []
        for part, lo in enumerate(range(0, max(len(windows), 1), per_file)):
            chunk = windows[lo:lo + per_file]
            rel = f"{name}/part-{part:05d}.npy"
            chunk.tofile(tmp / rel)
            _write_metadata(tmp / rel.replace(".npy", ".csv.gz"), chunk, ctx.eos_id, name, part, lo)
            paths[name].append(ctx.ref(rel))
            files += [rel, rel.replace(".npy", ".csv.gz")]
    weights = ctx.plan.realized_weights
    sources = []
    for name in ctx.active():
        sp = ctx.plan.source(name)
        rep = max(1.0, _ceil6(sp.epochs), sp.max_epochs if sp.max_epochs is not None else 0.0)
        sources.append({"source_name": name, "target_ratio": float(fmt_weight(weights[name])),
                        "paths": paths[name], "max_repetition_ratio": rep})
    config = {
        "source_list": {"sources": sources},
        "requested_tokens": ctx.plan.total_windows * S,
        "global_batch_size": S,
        "seed": ctx.plan.seed,
    }
    header = (f"# OLMo-core SourceMixtureDatasetConfig written by mixweave. sequence_length: {S}, dtype: {dtype}, "
              f"vocab_size: {ctx.vocab_size}, eos_token_id: {ctx.eos_id}.\n"
              "# Set global_batch_size to your batch in tokens (a multiple of the sequence length).\n")
    (tmp / "source_mixture.yaml").write_text(header + dump_yaml(config), encoding="utf-8")
    return {"dtype": str(dtype), "paths": paths, "requested_tokens": config["requested_tokens"],
            "target_ratio": {s["source_name"]: s["target_ratio"] for s in sources},
            "max_repetition_ratio": {s["source_name"]: s["max_repetition_ratio"] for s in sources},
            "window": ctx.window_convention("S") + "; file length a multiple of S",
            "files": files + ["source_mixture.yaml"]}
