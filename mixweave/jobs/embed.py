"""Spark embedding job: ingest docs -> one float32 ``.npy`` block per unit of documents.

The unit of work is a slice of at most ``UNIT_ROWS`` rows of one parquet row group of an ingest
docs file: fixed by the data, never by Spark's partitioning; each task embeds its units with
:func:`mixweave.retrieval.embed_texts` (encoder of the resolved backend loaded once per worker
process, its CPU threads pinned per task) and writes ``<source>/part-FFFFF-GGGGG.npy`` straight
into the stage folder. Concatenating a source's blocks in name order gives embeddings aligned with
the source's document order (ingest file order, then row order). Pinning threads and fixing the
units is what makes the bytes identical on local[1], local[2] or a cluster. Exported backends
(onnx, openvino, onnx-int8, static) are built once into the shared encoder cache (atomic rename:
workers racing to build it keep one copy) and never import torch in the workers once built.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterator

import numpy as np

LOG = logging.getLogger(__name__)

UNIT_ROWS = 512


def plan_units(docs_files: dict[str, list[Path]], ingest_dir: Path) -> list[dict]:
    """Units of <= UNIT_ROWS rows per (source, docs file, row group), in document order."""
    import pyarrow.parquet as pq

    units = []
    for source in sorted(docs_files):
        for file_index, path in enumerate(docs_files[source]):
            meta = pq.ParquetFile(path).metadata
            for group in range(meta.num_row_groups):
                rows = meta.row_group(group).num_rows
                for start in range(0, rows, UNIT_ROWS):
                    units.append({
                        "unit": len(units), "source": source, "docs_file": str(path), "row_group": group,
                        "start": start, "stop": min(rows, start + UNIT_ROWS),
                        "out_file": f"{source}/part-{file_index:05d}-{group:05d}-{start:08d}.npy",
                    })
    return units


def _embed_units(out_root: str, encoder: str, max_tokens: int, batch_size: int, torch_threads: int, device: str | None,
                 backend: str = "torch"):
    def run(groups: Iterator[list[dict]]) -> Iterator[dict]:
        import pyarrow.parquet as pq

        from ..retrieval.encoders import embed_texts, load_encoder

        if backend == "torch" and torch_threads > 0:
            import torch

            torch.set_num_threads(torch_threads)
        model = load_encoder(encoder, device, backend=backend, threads=torch_threads if torch_threads > 0 else None)
        for group in groups:
            for unit in group:
                started = time.perf_counter()
                table = pq.ParquetFile(unit["docs_file"]).read_row_group(unit["row_group"], columns=["text"])
                table = table.slice(unit["start"], unit["stop"] - unit["start"])
                vectors = embed_texts(model, table.column("text").to_pylist(), max_tokens=max_tokens, batch_size=batch_size)
                target = Path(out_root) / unit["out_file"]
                target.parent.mkdir(parents=True, exist_ok=True)
                np.save(target, vectors.astype(np.float32, copy=False))
                yield {"unit": unit["unit"], "rows": len(vectors), "seconds": time.perf_counter() - started}

    return run


MAX_TASKS = 1024
"""Tasks of one embed job at most; beyond it a task embeds several units."""


def task_groups(units: list[dict], max_tasks: int = MAX_TASKS) -> list[list[dict]]:
    """Units dealt to at most ``max_tasks`` tasks, largest first (LPT): units sorted by rows
    (descending, then unit id) and dealt round-robin, so task 0 holds the largest units and Spark,
    which launches tasks in partition order, starts the long ones first and ends with the short ones.
    With one unit per task (<= max_tasks units) the slots finish within about one small unit of each
    other; the old contiguous ranges of units paired whole sources' row groups and left a slot idle
    (12 units on 2 slots: the slowest slot ran 24 % past the mean). Output files do not depend on it."""
    ordered = sorted(units, key=lambda u: (-(u["stop"] - u["start"]), u["unit"]))
    n_tasks = max(1, min(len(ordered), max_tasks))
    return [ordered[t::n_tasks] for t in range(n_tasks)]


def run_embed_in_process(
    *,
    units: list[dict],
    out_root: Path,
    encoder: str = "default",
    max_tokens: int = 510,
    batch_size: int = 32,
    torch_threads: int = 1,
    device: str | None = None,
    backend: str = "auto",
) -> dict:
    """:func:`run_embed` without Spark, for sources too small to pay for a JVM: the same units, the
    same encoder settings (threads pinned to ``torch_threads``, so the same bytes) and the same
    files, embedded one after another in this process. torch's thread count is restored after."""
    from ..data.progress import Progress
    from ..retrieval.encoder_backends import resolve_backend

    backend = resolve_backend(backend, device)
    if not units:
        return {"rows": 0, "encoder_seconds": 0.0, "slowest_unit_s": 0.0, "backend": backend}
    threads_before = None
    if backend == "torch":
        import torch

        threads_before = torch.get_num_threads()
    try:
        with Progress(sum(u["stop"] - u["start"] for u in units), unit="doc", label="embed") as progress:
            done = []
            for result in _embed_units(str(Path(out_root).resolve()), encoder, max_tokens, batch_size, torch_threads,
                                       device, backend)(iter([units])):
                done.append(result)
                progress.update(result["rows"])
    finally:
        if threads_before is not None:  # torch was imported above
            torch.set_num_threads(threads_before)
    return _summary(done, units, backend)


def run_embed(
    spark,
    *,
    units: list[dict],
    out_root: Path,
    encoder: str = "default",
    max_tokens: int = 510,
    batch_size: int = 32,
    torch_threads: int = 1,
    device: str | None = None,
    backend: str = "auto",
) -> dict:
    """Embed every unit with Spark; returns rows per unit, the encoder seconds and the backend
    (``auto`` is resolved here, on the driver: torch on CUDA, else the CPU default)."""
    from ..data.progress import spark_progress
    from ..retrieval.encoder_backends import resolve_backend
    backend = resolve_backend(backend, device)
    if not units:
        return {"rows": 0, "encoder_seconds": 0.0, "slowest_unit_s": 0.0, "backend": backend}
    if backend != "torch":  # build the export once here, not in every worker at the same time
        from ..retrieval.encoder_backends import ensure_export
        from ..retrieval.encoders import resolve_encoder_path

        ensure_export(resolve_encoder_path(encoder).resolve(), backend)
    groups = task_groups(units)
    with spark_progress(spark, "embed"):  # tasks run in executors: the driver reports their progress
        done = spark.sparkContext.parallelize(groups, len(groups)).mapPartitions(
            _embed_units(str(Path(out_root).resolve()), encoder, max_tokens, batch_size, torch_threads, device, backend),
        ).collect()
    return _summary(done, units, backend)


def _summary(done: list[dict], units: list[dict], backend: str) -> dict:
    if len(done) != len(units):
        raise RuntimeError(f"embedding finished {len(done)} of {len(units)} units")
    return {"rows": int(sum(r["rows"] for r in done)), "encoder_seconds": round(sum(r["seconds"] for r in done), 3),
            "slowest_unit_s": round(max(r["seconds"] for r in done), 3), "backend": backend}
