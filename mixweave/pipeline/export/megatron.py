"""Megatron-LM / Megatron-Core / NeMo 2 / Megatron-Bridge / GPT-NeoX: ``.bin`` + ``.idx``.

Layout (MMIDIDX version 1, ecosystem.md section 1): per source ``<name>_text_document.bin`` =
the windows back to back (little-endian uint16 when the vocabulary fits, else int32 -- the dtype
Megatron-Core infers from the vocab size when ``--per-dataset-sequences-path`` is used) and
``.idx`` = header, sizes (all S), byte pointers, doc_idx ``[0..W]`` (W + 1 entries).

Each window is one document of exactly S tokens. GPTDataset cuts samples of S+1 tokens overlapping
by one; with S-token documents every sample is one whole window plus the first token of the next
(shuffled) window as the last label, so ICP windows survive Megatron's shuffles intact. One epoch
of W windows yields W-1 samples.

Weights: ``--data-path w1 p1 w2 p2`` with ``w_i = T_i / sum T`` -- Megatron normalises weights and
treats them as shares of *samples*, i.e. of tokens. Repetition is implicit: asked for
``N * w_i`` samples, a dataset adds whole epochs until it has enough. With
``--train-samples N`` (N = sum T_i, written to ``megatron_args.txt``) each source is drawn
T_i times = its planned epochs. Megatron does not enforce epoch caps; the plan already did.

Cost: one sequential write of the windows (memory: one block of windows, streamed from the pack files).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from mixweave.pipeline.export.common import ExportContext, fmt_weight, token_dtype

MAGIC = b"MMIDIDX\x00\x00"
DTYPE_CODES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}


def write_indexed(prefix: Path, windows: np.ndarray) -> None:
    """``prefix.bin`` + ``prefix.idx`` with one document per row of ``windows`` ([W, S])."""
    n, s = windows.shape
    write_indexed_blocks(prefix, [windows], n, s, windows.dtype)


def write_indexed_blocks(prefix: Path, blocks, n: int, s: int, dtype: np.dtype, chunk: int = 1 << 20) -> None:
    """:func:`write_indexed` from consecutive blocks of ``[*, s]`` windows (``n`` rows in all): the
    ``.bin`` is appended block by block and the ``.idx`` arrays are written ``chunk`` rows at a time,
    so memory is one block, whatever the source's size."""
    dtype = np.dtype(dtype)
    rows = 0
    with open(f"{prefix}.bin", "wb") as fh:
        for block in blocks:
            np.ascontiguousarray(block, dtype=dtype).tofile(fh)
            rows += int(block.shape[0])
    if rows != n:
        raise RuntimeError(f"internal error: wrote {rows} windows, expected {n}")
    step = s * dtype.itemsize
    with open(f"{prefix}.idx", "wb") as fh:
        fh.write(MAGIC + struct.pack("<Q", 1) + struct.pack("<B", DTYPE_CODES[dtype]))
        fh.write(struct.pack("<Q", n) + struct.pack("<Q", n + 1))
        for lo in range(0, n, chunk):  # sizes
            fh.write(np.full(min(chunk, n - lo), s, dtype=np.int32).tobytes())
        for lo in range(0, n, chunk):  # pointers
            fh.write((np.arange(lo, min(n, lo + chunk), dtype=np.int64) * step).tobytes())
        for lo in range(0, n + 1, chunk):  # document index
            fh.write(np.arange(lo, min(n + 1, lo + chunk), dtype=np.int64).tobytes())


def export_megatron(ctx: ExportContext, tmp: Path) -> dict[str, Any]:
    dtype = token_dtype(ctx.vocab_size, signed=True)
    prefixes, files = {}, []
    for name in ctx.names:
        rel = f"{name}_text_document"
        n, step = ctx.n_windows(name), ctx.block_windows
        write_indexed_blocks(tmp / rel, (ctx.windows_s_range(name, dtype, lo, lo + step) for lo in range(0, n, step)),
                             n, ctx.seq_len, dtype)
        prefixes[name] = ctx.ref(rel)
        files += [f"{rel}.bin", f"{rel}.idx"]
    weights = ctx.plan.realized_weights
    active = ctx.active()
    blend = []
    for name in active:
        blend += [fmt_weight(weights[name]), prefixes[name]]
    (tmp / "data_path.txt").write_text(" ".join(blend) + "\n", encoding="utf-8")
    per_split = {"train": blend, "valid": None, "test": None}
    (tmp / "data_args.json").write_text(json.dumps(per_split, indent=2) + "\n", encoding="utf-8")
    sequences = {prefixes[n]: [ctx.plan.source(n).n_windows, ctx.plan.source(n).n_windows + 1] for n in ctx.names}
    (tmp / "sequences_per_dataset.json").write_text(json.dumps(sequences, indent=2) + "\n", encoding="utf-8")
    n_samples = ctx.plan.total_windows
    args = [
        f"--seq-length {ctx.seq_len}",
        f"--train-samples {n_samples}   # = sum of planned windows: each source drawn T_i times",
        f"--data-path {' '.join(blend)}",
        "--split 100,0,0",
        f"# or: --per-split-data-args-path {ctx.ref('data_args.json')}",
        f"--per-dataset-sequences-path {ctx.ref('sequences_per_dataset.json')}",
        f"--seed {ctx.plan.seed}",
        "# set --data-cache-path DIR: without it Megatron writes its index cache into <prefix>/cache/ here",
        "# leave --reset-attention-mask off for ICP windows (cross-document attention is the point)",
    ]
    if ctx.sink_id is not None:
        args += [f"--vocab-size {ctx.vocab_size}   # counts the attention-sink token",
                 ctx.sink_note().rstrip("\n") + "; GPTDataset's last label of a sample is the next window's sink"]
    (tmp / "megatron_args.txt").write_text("\n".join(args) + "\n", encoding="utf-8")
    return {
        "dtype": str(dtype), "prefixes": prefixes, "data_path": " ".join(blend),
        "weights": {n: weights[n] for n in active}, "train_samples": n_samples,
        "window": ctx.window_convention("S") + "; each window one document",
        "sink_id": ctx.sink_id,
        "files": files + ["data_path.txt", "data_args.json", "sequences_per_dataset.json", "megatron_args.txt"],
    }
