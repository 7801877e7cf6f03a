"""The ``pack`` artifact: fixed-length token windows per source, the input of exports and training.

Layout of a pack folder (written by the ``pack`` stage, read by exporters and the trainer)::

    pack/
      windows/<source>/part-00000.parquet   window_id int64, tokens list<int32|uint16> (each exactly
                                            seq_len tokens, or seq_len + 1 with plus_one)
      spans/<source>/part-00000.parquet     window_id, doc, start, end, doc_offset (see retrieval.pack)
      _manifest.json                        ... "windows": {seq_len, plus_one, window_tokens, tokenizer,
                                            sources: {name: {n_windows, n_tokens, files, dropped_tokens}}}

``window_id`` runs 0..W-1 per source in the (already shuffled) output order. :func:`read_windows`
returns a ``[W, window_tokens]`` numpy array in the tokenizer's dtype. :func:`write_pack_artifact`
writes the same layout from arrays (used by the pack stage and by tests that need windows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError
from .manifest import MANIFEST_NAME, _safe_member, check_name, require_manifest, write_json_atomic


@dataclass(frozen=True)
class WindowsInfo:
    seq_len: int
    plus_one: bool
    tokenizer: dict
    sources: dict

    @property
    def window_tokens(self) -> int:
        return self.seq_len + int(self.plus_one)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.tokenizer.get("dtype", "uint32"))


def windows_info(pack_dir: str | Path) -> WindowsInfo:
    manifest = require_manifest(pack_dir, "pack")
    info = manifest.get("windows")
    if not isinstance(info, dict):
        raise InputError(f"{pack_dir} is not a pack artifact (its manifest has no 'windows' section); run the pack stage")
    for name in info["sources"]:
        check_name(name, f"{pack_dir}: source name")  # exporters turn it into file names
    return WindowsInfo(int(info["seq_len"]), bool(info["plus_one"]), dict(info["tokenizer"]), dict(info["sources"]))


def read_windows(pack_dir: str | Path, source: str) -> np.ndarray:
    """All windows of one source as ``[W, window_tokens]`` in the tokenizer's dtype (uint16/uint32)."""
    pack_dir = Path(pack_dir)
    info = windows_info(pack_dir)
    if source not in info.sources:
        raise InputError(f"source {source!r} has no windows in {pack_dir}; sources there: {', '.join(sorted(info.sources))}")
    parts = []
    for rel in info.sources[source]["files"]:
        table = pq.read_table(_safe_member(pack_dir, rel), columns=["window_id", "tokens"])
        tokens = table.column("tokens").combine_chunks()
        flat = tokens.flatten().to_numpy(zero_copy_only=False)
        parts.append(flat.reshape(-1, info.window_tokens))
    if not parts:
        return np.zeros((0, info.window_tokens), dtype=info.dtype)
    windows = np.concatenate(parts).astype(info.dtype, copy=False)
    if windows.shape[0] != int(info.sources[source]["n_windows"]):
        raise InputError(f"{pack_dir}: source {source!r} has {windows.shape[0]} windows, manifest says "
                         f"{info.sources[source]['n_windows']}; re-run the pack stage")
    return windows


def windows_parquet_table(windows: np.ndarray, first_window_id: int = 0) -> pa.Table:
    n, width = windows.shape
    values = pa.array(np.ascontiguousarray(windows).reshape(-1).astype(np.int32 if windows.dtype != np.uint16 else np.uint16))
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * width) if n * width < 2**31 else pa.array(np.arange(n + 1, dtype=np.int64) * width)
    lists = (pa.ListArray if offsets.type == pa.int32() else pa.LargeListArray).from_arrays(offsets, values)
    return pa.table({"window_id": pa.array(np.arange(n, dtype=np.int64) + first_window_id), "tokens": lists})


def write_windows_files(root: Path, source: str, windows: np.ndarray, spans: pa.Table | None = None) -> list[str]:
    """Write one source's windows (and spans) under ``root``; return the relative window file paths."""
    rel = f"windows/{source}/part-00000.parquet"
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(windows_parquet_table(windows), root / rel, compression="zstd")
    if spans is not None:
        srel = f"spans/{source}/part-00000.parquet"
        (root / srel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(spans, root / srel, compression="zstd")
    return [rel]


def windows_section(seq_len: int, plus_one: bool, tokenizer: Mapping, per_source: Mapping[str, dict]) -> dict:
    return {"seq_len": int(seq_len), "plus_one": bool(plus_one), "window_tokens": int(seq_len) + int(plus_one),
            "tokenizer": dict(tokenizer), "sources": {k: dict(v) for k, v in sorted(per_source.items())}}


def write_pack_artifact(
    out_dir: str | Path, windows_by_source: Mapping[str, np.ndarray], *, seq_len: int, plus_one: bool, tokenizer: Mapping
) -> Path:
    """Write a complete pack artifact (files + manifest) from arrays; for tests and small tools."""
    from .manifest import atomic_stage_dir, build_manifest

    with atomic_stage_dir(out_dir) as tmp:
        per_source = {}
        for name, windows in sorted(windows_by_source.items()):
            windows = np.asarray(windows)
            if windows.ndim != 2 or windows.shape[1] != seq_len + int(plus_one):
                raise InputError(f"windows of {name} must be [W, {seq_len + int(plus_one)}], got {windows.shape}")
            files = write_windows_files(tmp, name, windows)
            per_source[name] = {"n_windows": int(windows.shape[0]), "n_tokens": int(windows.shape[0] * seq_len),
                                "files": files, "dropped_tokens": 0}
        manifest = build_manifest(stage="pack", stage_version=1, config={"seq_len": seq_len, "plus_one": plus_one},
                                  fingerprint_value="", inputs={}, root=tmp,
                                  extra={"windows": windows_section(seq_len, plus_one, tokenizer, per_source)})
        write_json_atomic(tmp / MANIFEST_NAME, manifest)
    return Path(out_dir)
