"""The ``pack`` artifact: fixed-length token windows per source, the input of exports and training.

Layout of a pack folder (written by the ``pack`` stage, read by exporters and the trainer)::

    pack/
      windows/<source>/part-NNNNN.parquet   window_id int64, tokens list<int32|uint16> (each exactly
                                            seq_len tokens, or seq_len + 1 with plus_one); file NNNNN
                                            holds output windows [NNNNN * F, (NNNNN + 1) * F)
      spans/<source>/part-NNNNN.parquet     window_id, doc, start, end, doc_offset (see retrieval.pack)
                                            of the same windows, sorted by (window_id, start)
      _manifest.json                        ... "windows": {seq_len, plus_one, window_tokens, tokenizer,
                                            [sink_id,] sources: {name: {n_windows, n_tokens, files,
                                            dropped_tokens}}}

With an attention-sink token (``order.sink_token``) token 0 of every window is ``sink_id`` (also in
the tokenizer block, whose vocab_size counts it); the spans start at offset 1.

``window_id`` runs 0..W-1 per source in the (already shuffled) output order. F (windows per file,
:func:`file_windows`) is a function of the window width and ``order.pack_file_windows`` only, so
the in-process pack and the Spark pack write the same files, byte for byte. :func:`read_windows`
returns a ``[W, window_tokens]`` numpy array in the tokenizer's dtype (the whole source: small
tools and the trainer); :class:`WindowReader` reads ranges or gathers rows with at most one file
decoded at a time (exporters: memory bounded by a file plus the requested rows).
:func:`write_pack_artifact` writes the same layout from arrays (the pack stage and tests).
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

    @property
    def sink_id(self) -> int | None:
        """The attention-sink token at position 0 of every window, or None."""
        sink = self.tokenizer.get("sink_id")
        return None if sink is None else int(sink)


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


def window_documents(pack_dir: str | Path, source: str) -> tuple[np.ndarray, np.ndarray]:
    """The documents of each window of ``source`` as CSR: ``docs[indptr[w]:indptr[w + 1]]`` are the
    source document indices of output window w, in window order (read from the spans files)."""
    pack_dir = Path(pack_dir)
    info = windows_info(pack_dir)
    n = int(info.sources[source]["n_windows"])
    ids, docs = [], []
    for rel in info.sources[source]["files"]:
        spans = _safe_member(pack_dir, rel.replace("windows/", "spans/", 1))
        if not spans.is_file():
            raise InputError(f"{pack_dir} has no spans for {source} ({spans}); re-run the pack stage")
        table = pq.read_table(spans, columns=["window_id", "doc"])
        ids.append(table.column("window_id").to_numpy().astype(np.int64))
        docs.append(table.column("doc").to_numpy().astype(np.int64))
    ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(ids, minlength=n)[:n], out=indptr[1:])
    return indptr, (np.concatenate(docs) if docs else np.zeros(0, np.int64))


FILE_TOKENS = 1 << 25
"""Default tokens per windows file (~128 MB as int32 in memory)."""


def file_windows(window_tokens: int, setting: int = 0) -> int:
    """Windows per pack file: ``setting`` when > 0, else as many as hold :data:`FILE_TOKENS` tokens."""
    return int(setting) if setting and setting > 0 else max(1, FILE_TOKENS // max(1, int(window_tokens)))


def window_file_name(kind: str, source: str, index: int) -> str:
    """``windows/<source>/part-NNNNN.parquet`` (kind ``windows``) or the spans file of the same windows."""
    return f"{kind}/{source}/part-{int(index):05d}.parquet"


def gather_by_file(rows: np.ndarray, bounds: np.ndarray, read_file, out: np.ndarray) -> np.ndarray:
    """Fill ``out[j]`` with row ``rows[j]`` of a row space cut into files: file ``f`` holds rows
    ``[bounds[f], bounds[f + 1])`` and ``read_file(f)`` returns its rows; each file touched is read
    once per call (rows already range-checked by the caller)."""
    which = np.searchsorted(bounds, rows, side="right") - 1
    for f in np.unique(which):
        at = np.flatnonzero(which == f)
        out[at] = read_file(int(f))[rows[at] - bounds[f]]
    return out


class WindowReader:
    """Windows of one source by output row: :meth:`read` a range, :meth:`take` arbitrary rows.

    Row counts come from each file's parquet footer; one decoded file is cached, so reading a source
    in consecutive ranges decodes each file once. Memory: one file + the rows asked for."""

    def __init__(self, pack_dir: str | Path, source: str, info: "WindowsInfo | None" = None):
        self.pack_dir = Path(pack_dir)
        self.info = info or windows_info(self.pack_dir)
        if source not in self.info.sources:
            raise InputError(f"source {source!r} has no windows in {pack_dir}; sources there: "
                             f"{', '.join(sorted(self.info.sources))}")
        self.source = source
        self.paths = [_safe_member(self.pack_dir, rel) for rel in self.info.sources[source]["files"]]
        counts = [pq.ParquetFile(p).metadata.num_rows for p in self.paths]
        self.bounds = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)
        self.n_windows = int(self.bounds[-1])
        if self.n_windows != int(self.info.sources[source]["n_windows"]):
            raise InputError(f"{pack_dir}: source {source!r} has {self.n_windows} windows, manifest says "
                             f"{self.info.sources[source]['n_windows']}; re-run the pack stage")
        self._cached: tuple[int, np.ndarray] | None = None

    def _file(self, i: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != i:
            self._cached = None
            table = pq.read_table(self.paths[i], columns=["tokens"])
            flat = table.column("tokens").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            self._cached = (i, flat.reshape(-1, self.info.window_tokens).astype(self.info.dtype, copy=False))
        return self._cached[1]

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Output windows ``[lo, hi)`` as ``[hi - lo, window_tokens]``."""
        lo, hi = max(0, int(lo)), min(self.n_windows, int(hi))
        out = np.empty((max(0, hi - lo), self.info.window_tokens), self.info.dtype)
        pos = lo
        while pos < hi:
            i = int(np.searchsorted(self.bounds, pos, side="right")) - 1
            stop = min(hi, int(self.bounds[i + 1]))
            out[pos - lo:stop - lo] = self._file(i)[pos - self.bounds[i]:stop - self.bounds[i]]
            pos = stop
        return out

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Windows at ``rows`` (any order, repeats allowed), each file decoded once per call."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        out = np.empty((rows.size, self.info.window_tokens), self.info.dtype)
        if not rows.size:
            return out
        if rows.min() < 0 or rows.max() >= self.n_windows:
            raise InputError(f"window rows outside 0..{self.n_windows - 1}")
        return gather_by_file(rows, self.bounds, self._file, out)

    def blocks(self, step: int):
        """``(lo, windows[lo:lo + step])`` for consecutive ranges covering the source."""
        step = max(1, int(step))
        for lo in range(0, self.n_windows, step):
            yield lo, self.read(lo, lo + step)


def windows_parquet_table(windows: np.ndarray, first_window_id: int = 0) -> pa.Table:
    n, width = windows.shape
    values = pa.array(np.ascontiguousarray(windows).reshape(-1).astype(np.int32 if windows.dtype != np.uint16 else np.uint16))
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * width) if n * width < 2**31 else pa.array(np.arange(n + 1, dtype=np.int64) * width)
    lists = (pa.ListArray if offsets.type == pa.int32() else pa.LargeListArray).from_arrays(offsets, values)
    return pa.table({"window_id": pa.array(np.arange(n, dtype=np.int64) + first_window_id), "tokens": lists})


def write_window_block(root: Path, source: str, index: int, windows: np.ndarray, first_window_id: int,
                       spans: pa.Table | None = None) -> str:
    """Write file ``index`` of a source (its windows, and its spans when given); returns the windows path.
    The one writer of both pack paths, so equal rows give equal bytes."""
    rel = window_file_name("windows", source, index)
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(windows_parquet_table(windows, first_window_id), root / rel, compression="zstd")
    if spans is not None:
        write_spans_block(root, source, index, spans)
    return rel


def write_spans_block(root: Path, source: str, index: int, spans: pa.Table) -> str:
    """Write the spans file ``index`` of a source (rows sorted by (window_id, start))."""
    srel = window_file_name("spans", source, index)
    (root / srel).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(spans.combine_chunks(), root / srel, compression="zstd")
    return srel


def write_windows_files(root: Path, source: str, windows: np.ndarray, spans: pa.Table | None = None,
                        per_file: int | None = None) -> list[str]:
    """Write one source's windows (and spans, sorted by window_id) under ``root`` in files of
    ``per_file`` windows (default :func:`file_windows`); return the relative window file paths."""
    n = int(windows.shape[0])
    per_file = int(per_file or file_windows(windows.shape[1]))
    cuts = None
    if spans is not None:
        ids = spans.column("window_id").to_numpy()
        cuts = np.searchsorted(ids, np.arange(0, max(n, 1) + per_file, per_file))
    files = []
    for index, lo in enumerate(range(0, max(n, 1), per_file)):
        part_spans = None if spans is None else spans.slice(int(cuts[index]), int(cuts[index + 1] - cuts[index]))
        files.append(write_window_block(root, source, index, windows[lo:lo + per_file], lo, part_spans))
    return files


def windows_section(seq_len: int, plus_one: bool, tokenizer: Mapping, per_source: Mapping[str, dict]) -> dict:
    section = {"seq_len": int(seq_len), "plus_one": bool(plus_one), "window_tokens": int(seq_len) + int(plus_one),
               "tokenizer": dict(tokenizer), "sources": {k: dict(v) for k, v in sorted(per_source.items())}}
    if tokenizer.get("sink_id") is not None:
        section["sink_id"] = int(tokenizer["sink_id"])
    return section


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
