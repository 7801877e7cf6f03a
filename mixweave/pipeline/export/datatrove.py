"""datatrove / nanotron (Nanoset): ``.ds`` + ``.ds.index`` + ``.ds.metadata`` with S+1 windows.

Layout (datatrove's ``TokenizedFile``): per source ``<name>/head/<name>_NNNNN.ds`` and
``<name>/rest/<name>_NNNNN.ds`` = raw little-endian token ids (uint16 when the vocabulary fits, else
uint32; the reader's ``token_size`` 2 or 4), ``.ds.index`` = uint64 document end offsets in tokens
(after every EOS and at every window end), ``.ds.metadata`` = ``tokenizer|token_size``, token
count, human count. ``head/`` holds the pack's first ``r = T_i mod W_i`` windows (all of them when
r = 0 or the source is not drawn), ``rest/`` the others, so ``DatatroveFolderDataset(<name>,
seq_len=S, token_size=..., filename_pattern="**/*.ds")`` (sorted: head, then rest) reads the whole
source in pack order (its default pattern ``*.ds`` does not descend into sub-folders); item i is
tokens ``[i*(S+1), (i+1)*(S+1))``: exactly window i (inputs ``[:-1]``, labels ``[1:]``). Files hold
whole windows, so no window straddles two files.

Weights (``nanotron.yaml``, a ``data_stages`` entry). Nanoset (nanotron ``data/nanoset.py``) builds
ONE epoch of ``sum(dataset sizes)`` samples with ``build_nanoset_index_helper`` (max-error
blending by weight, sample index = draws modulo the dataset size), shuffles it and repeats that
same epoch; with one folder per source and weights = shares, a source drawn more or less than its
size wraps within that one epoch: the demo used 67 of books' 309 windows up to 4 times and shares
drifted by up to 0.0016. So each source is listed as folders whose sizes add up to its count T_i:
``[head, rest] x floor(T_i / W_i)`` then ``head`` once more for the partial epoch (only ``head``
for a downsampled source), each entry weighted by its size / ``sum T``. The folder sizes then sum
to ``N = sum T`` and weights proportional to sizes make the max-error helper draw every entry
exactly its size, each index once: trained for N sequences (``train_steps x global batch``)
Nanoset draws exactly T_i windows of each source, whole epochs before repeats (each window
``floor`` or ``ceil`` of the source's epochs times), planned shares exactly. Trained for M != N
sequences it repeats (or truncates) that shuffled epoch: the first M mod N samples are a random
prefix. Option ``global_batch_size`` B: the counts are first rounded to ``N' = B*ceil(N/B)``
(:func:`common.batch_targets`) so whole batches realise them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mixweave.pipeline.export.common import (
    ExportContext,
    batch_targets,
    dump_yaml,
    fmt_weight,
    human_count,
    token_dtype,
)

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


def nanoset_entries(targets: dict[str, int], n_windows: dict[str, int]) -> list[tuple[str, str, int]]:
    """``(source, folder, windows)`` Nanoset entries whose sizes add up to each source's target."""
    entries = []
    for name, t in targets.items():
        w = n_windows[name]
        epochs, r = divmod(t, w)
        if r == 0:
            entries += [(name, "head", w)] * epochs
        else:
            entries += [(name, "head", r), (name, "rest", w - r)] * epochs + [(name, "head", r)]
    return entries


def export_datatrove(ctx: ExportContext, tmp: Path) -> dict[str, Any]:
    dtype = token_dtype(ctx.vocab_size)
    width = ctx.seq_len + 1
    per_file = max(1, int(ctx.options.get("max_file_bytes", MAX_FILE_BYTES)) // (width * dtype.itemsize))
    tok_name = str(ctx.info.tokenizer.get("name", "unknown"))
    targets = batch_targets(ctx.plan, ctx.options.get("global_batch_size"))
    files, folders = [], {}
    for name in ctx.names:
        n = ctx.n_windows(name)
        split = targets.get(name, 0) % max(n, 1) or n
        for sub, first, stop in (("head", 0, split), ("rest", split, n)):
            if sub == "rest" and stop <= first:
                continue
            (tmp / name / sub).mkdir(parents=True)
            for part, lo in enumerate(range(first, max(stop, first + 1), per_file)):  # memory: one output file
                rel = f"{name}/{sub}/{name}_{part:05d}.ds"
                write_ds(tmp / rel, ctx.windows_s_plus_one_range(name, dtype, lo, min(stop, lo + per_file)),
                         ctx.eos_id, tok_name)
                files += [rel, f"{rel}.index", f"{rel}.metadata"]
        folders[name] = ctx.ref(name)
    entries = nanoset_entries(targets, {s.name: s.n_windows for s in ctx.plan.sources})
    total = sum(targets.values())
    stage = {
        "name": "mixweave",
        "start_training_step": 1,
        "data": {
            "seed": ctx.plan.seed,
            "num_loading_workers": 1,
            "dataset": {
                "dataset_folder": [ctx.ref(f"{name}/{sub}") for name, sub, _ in entries],
                "dataset_weights": [float(fmt_weight(size / total)) for _, _, size in entries],
                "token_size_in_bytes": dtype.itemsize,
                "tokenizer_name": tok_name,
                "vocab_size": ctx.vocab_size,
                "return_positions": True,
            },
        },
    }
    header = (f"# nanotron data stage written by mixweave: sequence_length {ctx.seq_len}; train for exactly {total} "
              "sequences (train_steps x global batch): each source is listed as folders whose sizes add up to its "
              "planned windows, so Nanoset draws each window whole epochs before repeats.\n") + ctx.sink_note()
    (tmp / "nanotron.yaml").write_text(header + dump_yaml({"data_stages": [stage]}), encoding="utf-8")
    return {"dtype": str(dtype), "token_size": dtype.itemsize, "folders": folders,
            "entries": [{"source": n, "folder": ctx.ref(f"{n}/{sub}"), "windows": k} for n, sub, k in entries],
            "weights": {n: t / total for n, t in targets.items()}, "windows_per_source": targets,
            "sequences": total, "global_batch_size": int(ctx.options.get("global_batch_size") or 1),
            "window": ctx.window_convention("S+1"), "sink_id": ctx.sink_id, "files": files + ["nanotron.yaml"]}
