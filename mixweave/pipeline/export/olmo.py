"""OLMo-core (and Dolma-style token files): headerless memmaps + ``.csv.gz`` + source mixture YAML.

Layout: per source ``<name>/part-NNNNN.npy`` = raw little-endian token ids (NOT ``np.save``
format: no header), uint16 when the vocabulary fits else uint32, each file a whole number of
S-token windows (OLMo-core's ``NumpyFSLDataset`` concatenates a file and cuts S-token instances,
dropping a per-file remainder -- there is none, so every instance is exactly one window). Next to
each, ``part-NNNNN.csv.gz`` with Dolma's rows ``start,end,id,src,loc`` (token offsets, end
exclusive): documents end after each EOS and at every window end, since windows are shuffled.

Mixture: ``source_mixture.yaml`` is a ``SourceMixtureDatasetConfig`` (``source_list.sources[]``
with ``source_name``, ``target_ratio``, ``paths``, ``max_repetition_ratio`` = the mixture's epoch cap,
at least the exported epochs and at least 1) plus ``requested_tokens``, ``global_batch_size`` (in
tokens) and ``seed``. OLMo-core trains whole batches: it asks for ``ceil(requested / batch)``
batches and hands the missing instances to the file entries below their cap (first evenly, then by
largest remainder), which favours whichever source is still partway through an epoch (demo: books
251 instead of 242 windows at 64 sequences a batch). So the export is written *for* a batch of B
sequences (option ``global_batch_size``, default 1): counts T'_i = the plan's T_i plus the
``B*ceil(N/B) - N`` extra windows shared by weight (:func:`common.batch_targets`),
``requested_tokens = S * sum T'`` (a whole number of batches, so OLMo adds nothing), and each
``target_ratio`` the smallest float with ``int(requested * ratio) = S * T'_i``. The exporter then
replays OLMo-core's allocation arithmetic (:func:`olmo_instances`) and records the instances it
realises per source in the manifest (``instances``, ``realized_shares``); when they differ from
T'_i (e.g. multi-file sources whose per-file rounding OLMo rebalances across sources) or when the
batch forced extra windows, it logs a warning. A different batch needs a re-export.
OLMo takes each source's files from their heads and re-lists them for repetition, so which windows
a downsampled source keeps is decided by file order -- our windows are already shuffled, so the
heads are a random subset.

Cost: one sequential write per source plus O(docs) for the metadata rows; memory: one output file
(``max_file_bytes``), read from the pack files range by range.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from mixweave.errors import ConfigError
from mixweave.pipeline.export.common import ExportContext, batch_targets, dump_yaml, token_dtype

log = logging.getLogger(__name__)
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


def exact_ratio(tokens: int, requested: int) -> float:
    """The smallest float ``r >= tokens / requested`` with ``int(requested * r) == tokens`` (OLMo's
    ``needed = int(requested_tokens * target_ratio)`` would otherwise lose a token to float noise)."""
    r = tokens / requested
    while int(requested * r) < tokens:
        r = float(np.nextafter(r, 2.0))
    return r


def olmo_instances(sources: list[dict], file_tokens: dict[str, list[int]], requested_tokens: int,
                   global_batch_size: int, seq_len: int) -> dict[str, int]:
    """Instances per source that OLMo-core 3.0's ``SourceMixtureDatasetConfig.build`` selects, replayed
    on token counts (``file_tokens[path]``): per source ``needed = int(requested * ratio)``; per
    file, ``ceil(tokens * chunk)`` for each chunk of ``needed / population`` (whole epochs, then the
    rest); ``min(tokens // S, file // S)`` instances per entry; then the shortfall to
    ``ceil(requested / batch) * batch / S`` is added to the entries below their file size, first
    evenly, then by largest remainder (ties to the later entry)."""
    entries = []  # (source, kept tokens, file tokens)
    for src in sources:
        sizes = [file_tokens[p] for p in src["paths"]]
        needed = int(requested_tokens * src["target_ratio"])
        take, chunks = needed / sum(sizes), []
        if take > 1:
            while take > 0:
                chunks.append(min(1.0, take))
                take -= chunks[-1]
        else:
            chunks = [take]
        entries += [(src["source_name"], int(math.ceil(n * c)), n) for c in chunks for n in sizes]
    S = seq_len
    inst = [min(t // S, n // S) for _, t, n in entries]
    rem = [(t % S) / S if i < n // S else 0.0 for i, (_, t, n) in zip(inst, entries)]
    wanted = math.ceil(requested_tokens / global_batch_size) * (global_batch_size // S)
    more = wanted - sum(inst)
    if more > 0:
        eligible = [i for i, (_, _, n) in enumerate(entries) if inst[i] < n // S]
        if eligible:
            base = more // len(eligible)
            for i in eligible:
                inst[i] += min(base, entries[i][2] // S - inst[i])
            more = wanted - sum(inst)
            ranked = sorted(((rem[i], i) for i in eligible if inst[i] < entries[i][2] // S), reverse=True)
            for _, i in ranked[:max(more, 0)]:
                inst[i] += 1
    out: dict[str, int] = {}
    for (name, _, _), k in zip(entries, inst):
        out[name] = out.get(name, 0) + k
    return out


def mixture_config(ctx: ExportContext, paths: dict[str, list[str]], targets: dict[str, int],
                   batch: int) -> dict[str, Any]:
    """The SourceMixtureDatasetConfig dict that asks OLMo-core for ``targets`` windows per source."""
    S = ctx.seq_len
    requested = S * sum(targets.values())
    sources = []
    for name, t in targets.items():
        sp = ctx.plan.source(name)
        population = sp.n_windows * S
        rep = max(1.0, _ceil6(t / sp.n_windows), sp.max_epochs if sp.max_epochs is not None else 0.0)
        if int(population * rep) < t * S:  # a cap the float product rounds below the count
            rep = _ceil6(t / sp.n_windows) + 1e-6
        sources.append({"source_name": name, "target_ratio": exact_ratio(t * S, requested),
                        "paths": paths[name], "max_repetition_ratio": rep})
    return {"source_list": {"sources": sources}, "requested_tokens": requested,
            "global_batch_size": batch * S, "seed": ctx.plan.seed}


def _check_batch(ctx: ExportContext, targets: dict[str, int], realized: dict[str, int], batch: int) -> None:
    """Warn when OLMo-core will not train exactly the plan's windows."""
    plan = ctx.plan
    if realized != targets:
        log.warning("olmo export: with a global batch of %d sequences OLMo-core realises %s windows per source, "
                    "not the exported %s (per-file rounding); the manifest states the realised shares",
                    batch, realized, targets)
    if sum(targets.values()) != plan.total_windows:
        total = sum(realized.values())
        drift = max(abs(realized.get(s.name, 0) / total - s.target_windows / plan.total_windows)
                    for s in plan.sources)
        log.warning("olmo export: %d planned windows are not a whole number of batches of %d; OLMo-core trains "
                    "%d windows (%+d), shared by weight: %s (largest share change %.4f)", plan.total_windows, batch,
                    total, total - plan.total_windows, realized, drift)


def export_olmo(ctx: ExportContext, tmp: Path) -> dict[str, Any]:
    dtype = token_dtype(ctx.vocab_size)
    S = ctx.seq_len
    batch = int(ctx.options.get("global_batch_size") or 1)
    if batch < 1:
        raise ConfigError(f"global_batch_size must be a positive number of sequences, got {batch}")
    per_file = max(1, int(ctx.options.get("max_file_bytes", MAX_FILE_BYTES)) // (S * dtype.itemsize))
    paths: dict[str, list[str]] = {}
    file_tokens: dict[str, int] = {}
    files = []
    for name in ctx.names:
        n = ctx.n_windows(name)
        (tmp / name).mkdir()
        paths[name] = []
        for part, lo in enumerate(range(0, max(n, 1), per_file)):
            chunk = ctx.windows_s_range(name, dtype, lo, lo + per_file)  # memory: one output file
            rel = f"{name}/part-{part:05d}.npy"
            chunk.tofile(tmp / rel)
            _write_metadata(tmp / rel.replace(".npy", ".csv.gz"), chunk, ctx.eos_id, name, part, lo)
            paths[name].append(ctx.ref(rel))
            file_tokens[ctx.ref(rel)] = int(chunk.size)
            files += [rel, rel.replace(".npy", ".csv.gz")]
    targets = batch_targets(ctx.plan, batch)
    config = mixture_config(ctx, paths, targets, batch)
    realized = olmo_instances(config["source_list"]["sources"], file_tokens, config["requested_tokens"],
                              config["global_batch_size"], S)
    _check_batch(ctx, targets, realized, batch)
    header = (f"# OLMo-core SourceMixtureDatasetConfig written by mixweave. sequence_length: {S}, dtype: {dtype}, "
              f"vocab_size: {ctx.vocab_size}, eos_token_id: {ctx.eos_id}.\n"
              f"# Written for a global batch of {batch} sequences ({batch * S} tokens); for another batch re-export "
              "with --global-batch-size (OLMo-core rounds to whole batches).\n") + ctx.sink_note()
    (tmp / "source_mixture.yaml").write_text(header + dump_yaml(config), encoding="utf-8")
    sources = config["source_list"]["sources"]
    total = sum(realized.values())
    return {"dtype": str(dtype), "paths": paths, "requested_tokens": config["requested_tokens"],
            "global_batch_size": batch, "global_batch_size_tokens": batch * S,
            "target_ratio": {s["source_name"]: s["target_ratio"] for s in sources},
            "max_repetition_ratio": {s["source_name"]: s["max_repetition_ratio"] for s in sources},
            "instances": realized, "realized_shares": {n: k / total for n, k in realized.items()},
            "exact": realized == {s.name: s.target_windows for s in ctx.plan.sources if s.target_windows > 0},
            "window": ctx.window_convention("S") + "; file length a multiple of S", "sink_id": ctx.sink_id,
            "files": files + ["source_mixture.yaml"]}
