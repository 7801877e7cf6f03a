"""Readers of stage artifacts that several stages and the report share: documents, embeddings,
kNN arrays and stats of a completed run, always through the files its manifest lists."""

from __future__ import annotations

import json
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


def load_knn(knn_dir: Path, source: str) -> tuple[np.ndarray, np.ndarray]:
    """The kNN arrays ``I`` (int64 [N, k]) and ``D`` (float32 [N, k]) of one source."""
    require_manifest(knn_dir, "knn")
    return np.load(knn_dir / source / "I.npy"), np.load(knn_dir / source / "D.npy")


def load_stats(count_dir) -> dict:
    """stats.json of a count artifact, refused when it was edited after the stage wrote it."""
    return json.loads(read_listed_file(count_dir, "stats.json"))
