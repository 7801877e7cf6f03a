"""datatrove / nanotron (Nanoset): ``.ds`` + ``.ds.index`` + ``.ds.metadata`` with S+1 windows.

Layout (datatrove's ``TokenizedFile``): per source folder ``<name>/<name>_NNNNN.ds`` = raw
little-endian token ids (uint16 when the vocabulary fits, else uint32; the reader's
``token_size`` 2 or 4), ``.ds.index`` = uint64 document end offsets in tokens (after every EOS and
at every window end), ``.ds.metadata`` = ``tokenizer|token_size``, token count, human count.
``DatatroveFolderDataset(folder, seq_len=S, token_size=...)`` item i is tokens
``[i*(S+1), (i+1)*(S+1))``: exactly window i (inputs ``[:-1]``, labels ``[1:]``). Files hold whole
windows, so no window straddles two files.

Weights (``nanotron.yaml``, a ``data_stages`` entry): ``dataset_folder`` + ``dataset_weights =
T_i / sum T`` (relative token shares). Nanoset blends by max error over the sum of dataset sizes
and wraps a source modulo its size, so repetition is implicit; train for ``sum T`` sequences
(``train_steps x global batch``) to draw each source T_i times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mixweave.pipeline.export.common import ExportContext, dump_yaml, fmt_weight, human_count, token_dtype

MAX_FILE_BYTES = 1 << 30


def write_ds(path: Path, windows: np.ndarray, eos_id: int, tokenizer_name: str) -> None:
    """``path`` (.ds) + ``.ds.index`` + ``.ds.metadata`` for ``windows`` ([W, S+1])."""
    n, width = windows.shape
    windows.tofile(path)
    flat = windows.reshape(-1)
    ends = np.union1d(np.flatnonzero(flat == eos_id) + 1, np.arange(1, n + 1, dtype=np.int64) * width)
    ends.astype("<u8").tofile(f"{path}.index")
    total = int(flat.size)
    Path(f"{path}.metadata").write_text(
        f"{tokenizer_name}|{windows.dtype.itemsize}\n{total}\n{human_count(total)}T", encoding="utf-8")


def export_datatrove(ctx: ExportContext, tmp: Path) -> dict[str, Any]:
    dtype = token_dtype(ctx.vocab_size)
    width = ctx.seq_len + 1
    per_file = max(1, int(ctx.options.get("max_file_bytes", MAX_FILE_BYTES)) // (width * dtype.itemsize))
    tok_name = str(ctx.info.tokenizer.get("name", "unknown"))
    files, folders = [], {}
    for name in ctx.names:
        windows = ctx.windows_s_plus_one(name, dtype)
        (tmp / name).mkdir()
        for part, lo in enumerate(range(0, max(windows.shape[0], 1), per_file)):
            rel = f"{name}/{name}_{part:05d}.ds"
            write_ds(tmp / rel, windows[lo:lo + per_file], ctx.eos_id, tok_name)
            files += [rel, f"{rel}.index", f"{rel}.metadata"]
        folders[name] = ctx.ref(name)
    weights = ctx.plan.realized_weights
    active = ctx.active()
    stage = {
        "name": "mixweave",
        "start_training_step": 1,
        "data": {
            "seed": ctx.plan.seed,
            "num_loading_workers": 1,
            "dataset": {
                "dataset_folder": [folders[n] for n in active],
                "dataset_weights": [float(fmt_weight(weights[n])) for n in active],
                "token_size_in_bytes": dtype.itemsize,
                "tokenizer_name": tok_name,
                "vocab_size": ctx.vocab_size,
                "return_positions": True,
            },
        },
    }
    header = (f"# nanotron data stage written by mixweave: sequence_length {ctx.seq_len}; train for "
              f"{ctx.plan.total_windows} sequences (train_steps x global batch) to draw each source as planned.\n")
    (tmp / "nanotron.yaml").write_text(header + dump_yaml({"data_stages": [stage]}), encoding="utf-8")
    return {"dtype": str(dtype), "token_size": dtype.itemsize, "folders": folders,
            "weights": {n: weights[n] for n in active}, "sequences": ctx.plan.total_windows,
            "window": ctx.window_convention("S+1"), "files": files + ["nanotron.yaml"]}
