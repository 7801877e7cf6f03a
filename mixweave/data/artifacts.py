"""Readers of stage artifacts that several stages and the report share: documents, embeddings,
kNN arrays and stats of a completed run, always through the files its manifest lists."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .manifest import artifact_files, read_listed_file, require_manifest


def docs_files_by_source(ingest_dir: Path) -> dict[str, list[Path]]:
    manifest = require_manifest(ingest_dir, "ingest")
    files = {p.as_posix(): p for p in artifact_files(ingest_dir, ".parquet")}
    out: dict[str, list[Path]] = {}
    for name, info in manifest["sources"].items():
        out[name] = [files[(ingest_dir / rel).resolve().as_posix()] for rel in info["files"]]
    return out


def load_embeddings(embed_dir: Path, source: str) -> np.ndarray:
    manifest = require_manifest(embed_dir, "embed")
    info = manifest["embeddings"][source]
    blocks = [np.load(embed_dir / rel) for rel in info["files"]]
    if not blocks:
        return np.zeros((0, int(info["dim"])), np.float32)
    return np.concatenate(blocks).astype(np.float32, copy=False)


def read_source_column(files: list[Path], column: str) -> pa.Array:
    """One column of a source's ingest files (``docs_files_by_source(...)[source]``), in doc order."""
    if not files:
        return pa.array([], pa.string())
    return pa.concat_arrays([pq.read_table(p, columns=[column]).column(column).combine_chunks() for p in files])


def read_source_texts(ingest_dir: Path, source: str) -> list[str]:
    return read_source_column(docs_files_by_source(ingest_dir)[source], "text").to_pylist()


def shard_bounds(n_rows: int, shard_rows: int) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` of the shards of a source with ``n_rows`` documents: fixed
    blocks of ``shard_rows`` rows keyed by global document index (the source's ingest order), so the
    layout is a function of the data and the setting, never of Spark's partitioning. A source with
    no documents has one empty shard (readers always find a file)."""
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
    if n_rows <= 0:
        return [(0, 0)]
    return [(start, min(n_rows, start + shard_rows)) for start in range(0, n_rows, shard_rows)]


def shard_file(prefix: str, index: int) -> str:
    return f"{prefix}-{index:05d}.npy"


@dataclass(frozen=True)
class KnnShard:
    """Rows ``[start, stop)`` of a source's kNN graph: ``I`` int64 [stop-start, k] global neighbour
    indices (-1 = none), ``D`` float32 cosines, both ``.npy`` files."""

    start: int
    stop: int
    I: Path
    D: Path


def knn_shards(knn_dir: Path, source: str) -> list[KnnShard]:
    """The shards of one source's kNN graph, in row order, as the knn manifest lists them."""
    info = require_manifest(knn_dir, "knn")["knn"][source]
    return [KnnShard(int(s["start"]), int(s["stop"]), knn_dir / s["I"], knn_dir / s["D"]) for s in info["shards"]]


def load_knn(knn_dir: Path, source: str) -> tuple[np.ndarray, np.ndarray]:
    """The kNN arrays ``I`` (int64 [N, k]) and ``D`` (float32 [N, k]) of one source, its shards
    concatenated (the in-process path; distributed stages read :func:`knn_shards` one by one)."""
    shards = knn_shards(knn_dir, source)
    I = np.concatenate([np.load(s.I) for s in shards])
    D = np.concatenate([np.load(s.D) for s in shards])
    return I, D


def load_keep(dedup_dir: Path, source: str) -> np.ndarray:
    """The dedup stage's keep mask (bool [N]) of one source, its shards concatenated."""
    info = require_manifest(dedup_dir, "dedup")["dedup"][source]
    return np.concatenate([np.load(dedup_dir / s["keep"]) for s in info["shards"]]).astype(bool, copy=False)


def order_files(order_dir: Path, source: str) -> list[Path]:
    """The order stage's files of one source, in traversal order: each an int64 array of global
    document indices; concatenated they are the source's ICP order."""
    info = require_manifest(order_dir, "order")["order"][source]
    return [order_dir / rel for rel in info["files"]]


def load_order(order_dir: Path, source: str) -> np.ndarray:
    """One source's whole ICP order (int64 global document indices)."""
    parts = [np.load(p) for p in order_files(order_dir, source)]
    return np.concatenate(parts).astype(np.int64, copy=False) if parts else np.zeros(0, np.int64)


def load_stats(count_dir) -> dict:
    """stats.json of a count artifact, refused when it was edited after the stage wrote it."""
    return json.loads(read_listed_file(count_dir, "stats.json"))


def read_npy_rows(path: str, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of a 2-d C-order ``.npy`` file by positioned reads (``os.pread``), runs of
    consecutive rows in one read. Unlike indexing a memory map, nothing stays mapped: a sparse sample
    of a large file (the k-means sample of 10^6 rows) does not fault the file's pages into the
    process (fault-around maps 64 KiB a touch: a 65,536-row sample mapped ~1 GB, all of VmHWM)."""
    import os

    rows = np.asarray(rows, np.int64)
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(handle)
        if fortran or len(shape) != 2:
            raise ValueError(f"{path}: expected a 2-d C-order array, got shape {shape} (fortran={fortran})")
        offset, width = handle.tell(), int(shape[1]) * dtype.itemsize
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        out = np.empty((rows.size, int(shape[1])), dtype)
        starts = np.flatnonzero(np.r_[True, np.diff(ordered) != 1]) if rows.size else np.zeros(0, np.int64)
        stops = np.r_[starts[1:], rows.size]
        fd = handle.fileno()
        for lo, hi in zip(starts.tolist(), stops.tolist()):
            first, count = int(ordered[lo]), hi - lo
            data = os.pread(fd, count * width, offset + first * width)
            if len(data) != count * width:
                raise ValueError(f"{path}: rows {first}..{first + count - 1} are beyond the file's end")
            out[order[lo:hi]] = np.frombuffer(data, dtype).reshape(count, -1)
    return out


@dataclass(frozen=True)
class Blocks:
    """A source's embed blocks: ``paths[b]`` holds global rows ``[starts[b], starts[b+1])``."""

    paths: tuple[str, ...]
    starts: np.ndarray  # int64 [len(paths) + 1]

    @property
    def n(self) -> int:
        return int(self.starts[-1])

    @classmethod
    def from_files(cls, files: list[Path]) -> "Blocks":
        """Row counts from each ``.npy`` header (memory-mapped, nothing read)."""
        rows = [np.load(p, mmap_mode="r").shape[0] for p in files]
        return cls(tuple(str(Path(p).resolve()) for p in files), np.concatenate([[0], np.cumsum(rows)]).astype(np.int64))


class RowReader:
    """Rows of a source by global index (in the blocks' dtype), gathered from its row blocks (embed
    vectors, kNN I / D shards): memory-mapped (tasks that
    read most of a block), or with ``mapped=False`` by positioned reads (sparse samples on the
    driver: :func:`read_npy_rows`, whose memory is the rows asked for, not the pages they touch)."""

    def __init__(self, blocks: Blocks, *, mapped: bool = True):
        self.blocks, self.mapped = blocks, mapped
        self._maps: dict[int, np.ndarray] = {}

    def block(self, b: int) -> np.ndarray:
        if b not in self._maps:
            self._maps[b] = np.load(self.blocks.paths[b], mmap_mode="r")
        return self._maps[b]

    def rows(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        which = np.searchsorted(self.blocks.starts, ids, side="right") - 1
        out = None
        for b in np.unique(which):
            at = np.flatnonzero(which == b)
            local = ids[at] - self.blocks.starts[b]
            part = self.block(int(b))[local] if self.mapped else read_npy_rows(self.blocks.paths[int(b)], local)
            if out is None:
                out = np.empty((ids.size, part.shape[1]), part.dtype)
            out[at] = part
        return out if out is not None else np.zeros((0, 0), np.float32)
