"""Spark ingest job: per-source globs -> ``docs/`` + ``quarantine/`` parquet, counts and stats.

Plan: the driver expands the globs (sorted, so file indices are deterministic) and makes one row
per file; ``mapInArrow`` runs :func:`mixweave.data.ingest.ingest_file` in the tasks (tokenizer
loaded once per worker process); duplicate ids within a source are found with a window over
``(source, doc_id)`` ordered by (file, line), so the first occurrence wins whatever the
partitioning; each source is split into ``ceil(bytes / target_file_mb)`` output files by
``xxhash64(doc_id)``, and ``groupBy(source, bucket).applyInArrow`` writes each file sorted by
doc_id. Output bytes therefore depend on the data and the config only, never on the number of
Spark partitions or tasks.

Below ``ingest.distributed_min_mb`` of input, :func:`run_ingest_in_process` writes the same
files and stats in one process (no JVM): the same reader, the same first-occurrence rule and the same
xxhash64 buckets.

Scaling: one task per input file (a huge single file is one task -- split such files upstream);
output files are written by the executors straight into the stage's temporary folder, which must
be on a filesystem all executors share (NFS/Lustre/a mounted bucket) on a real cluster.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from ..data.ingest import (
    DUPLICATE_DETAIL,
    HISTOGRAM_BINS,
    RAW_PREVIEW_CHARS,
    RECORD_SCHEMA,
    files_per_source,
    histogram_edges,
    ingest_file,
    merge_histograms,
    quarantine_duplicate_ids,
    spark_hash_buckets,
)
from ..data.readers import expand_glob, glob_root, id_key
from ..errors import InputError

LOG = logging.getLogger(__name__)

FILE_SCHEMA = pa.schema(
    [("file_index", pa.int64()), ("source", pa.string()), ("path", pa.string()),
     ("text_field", pa.string()), ("id_field", pa.string()), ("id_key", pa.string()),
     ("file_error", pa.string())]
)
WRITTEN_SCHEMA = pa.schema(
    [("kind", pa.string()), ("source", pa.string()), ("file", pa.string()), ("rows", pa.int64()),
     ("n_tokens", pa.int64()), ("n_bytes", pa.int64()), ("histogram", pa.list_(pa.int64())),
     ("reasons", pa.map_(pa.string(), pa.int64()))]
)


@dataclass(frozen=True)
class SourceSpec:
    name: str
    paths: tuple[str, ...]
    text_field: str = "text"
    id_field: str = "id"


def spark_schema(schema: pa.Schema):
    """The Spark StructType of an Arrow schema (large_string maps to string)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def _utf8_name(path: str) -> tuple[str, str | None]:
    """``(path, None)``, or a printable path and an error for a file name that is not UTF-8
    (Python hands such names over with surrogate escapes, which Arrow cannot store)."""
    try:
        path.encode("utf-8")
        return path, None
    except UnicodeEncodeError:
        printable = os.fsencode(path).decode("utf-8", errors="replace")
        return printable, "the file name is not valid UTF-8; rename the file"


def expand_sources(sources: Mapping[str, SourceSpec], exclude: tuple[str, ...] = ()) -> list[dict]:
    """One row per input file, sorted by (source name, path); a glob that matches nothing is an error.

    Globs are expanded by :func:`mixweave.data.readers.expand_glob` (no symlink loops, each real
    file once per source). Files under ``exclude`` folders (the run's output) or inside a mixweave
    stage folder are skipped -- a run never reads its own output -- and their number is logged once.
    Each row carries ``id_key``, the file's path relative to the common root of the source's
    globs, from which default doc ids are made.
    """
    if not sources:
        raise InputError("no sources given: add at least one under 'sources:' or pass --source NAME=GLOB")
    rows = []
    n_excluded = 0
    for name in sorted(sources):
        spec = sources[name]
        root = glob_root(spec.paths)
        matched: dict[str, tuple[str | None, str]] = {}  # real path -> (error, path)
        for pattern in spec.paths:
            hits = expand_glob(pattern, exclude)
            kept = [h for h in hits if not h.excluded]
            n_excluded += len(hits) - len(kept)
            if not kept:
                skipped = f" ({len(hits)} under the run's output or a stage folder were skipped)" if hits else ""
                raise InputError(
                    f"source {name!r}: {pattern!r} matches no file{skipped}; fix the glob or remove it from the source"
                )
            for hit in kept:
                matched.setdefault(os.path.realpath(hit.path), (hit.error, os.path.abspath(hit.path)))
        for error, path in sorted(matched.values(), key=lambda item: item[1]):
            printable, name_error = _utf8_name(path)
            rows.append({"source": name, "path": printable, "text_field": spec.text_field, "id_field": spec.id_field,
                         "id_key": _utf8_name(id_key(path, root))[0], "file_error": error or name_error})
    if n_excluded:
        LOG.warning("skipped %d input file(s) under the run's output folder or a mixweave stage folder", n_excluded)
    for index, row in enumerate(rows):
        row["file_index"] = index
    return rows


def input_file_size(path: str) -> int:
    """Bytes of an input file; 0 for what cannot be stat'ed (a dangling symlink is quarantined, not sized)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _read_partition(tokenizer_path: str, tokenizer_pattern: str | None, max_doc_bytes: int):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from ..data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(tokenizer_path, tokenizer_pattern)  # cached per worker process
        for batch in batches:
            for row in batch.to_pylist():
                yield from ingest_file(
                    source=row["source"], path=row["path"], file_index=row["file_index"], tokenizer=tokenizer,
                    text_field=row["text_field"], id_field=row["id_field"], max_doc_bytes=max_doc_bytes,
                    id_key=row["id_key"], file_error=row["file_error"],
                )

    return run


def write_output_group(table: pa.Table, out_root: str | Path, kind: str, source: str, bucket: int) -> dict:
    """Write one output file (``docs`` or ``quarantine`` of ``source``, file ``bucket``) under
    ``out_root``; return its :data:`WRITTEN_SCHEMA` row. Both ingest paths write through it."""
    from ..data.ingest import write_docs_file, write_quarantine_file

    rel = f"{kind}/{source}/part-{bucket:05d}.parquet"
    if kind == "docs":
        info = write_docs_file(table, Path(out_root) / rel)
        return {"kind": kind, "source": source, "file": rel, "rows": info["rows"], "n_tokens": info["n_tokens"],
                "n_bytes": info["n_bytes"], "histogram": info["histogram"], "reasons": []}
    info = write_quarantine_file(table, Path(out_root) / rel)
    return {"kind": kind, "source": source, "file": rel, "rows": info["rows"], "n_tokens": 0, "n_bytes": 0,
            "histogram": [0] * HISTOGRAM_BINS, "reasons": sorted(info["reasons"].items())}


def _write_group(out_root: str, kind: str):
    def run(table: pa.Table) -> pa.Table:
        if table.num_rows == 0:
            return pa.Table.from_pylist([], schema=WRITTEN_SCHEMA)
        row = write_output_group(table, out_root, kind, table.column("source")[0].as_py(),
                                 table.column("bucket")[0].as_py())
        return pa.Table.from_pylist([row], schema=WRITTEN_SCHEMA)

    return run


def run_ingest(
    spark,
    *,
    sources: Mapping[str, SourceSpec],
    out_root: str | Path,
    tokenizer_path: str = "default",
    tokenizer_pattern: str | None = None,
    max_doc_bytes: int = 10_000_000,
    target_file_mb: float = 256.0,
    partitions: int = 0,
    exclude: tuple[str, ...] = (),
    files: list[dict] | None = None,
) -> dict:
    """Run the ingest job, writing ``docs/`` and ``quarantine/`` under ``out_root``; return the stats.

    ``exclude``: folders whose files are never read even when a glob matches them (the run's output).
    ``files``: :func:`expand_sources` of ``sources`` with ``exclude`` and ``out_root``, when the caller
    already made it (globbed and logged once).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    started = time.perf_counter()
    files = files if files is not None else expand_sources(sources, exclude=(*exclude, str(out_root)))
    n_tasks = partitions or 2 * spark.sparkContext.defaultParallelism
    n_tasks = max(1, min(n_tasks, len(files)))
    file_table = pa.Table.from_pylist(files, schema=FILE_SCHEMA)
    files_df = spark.createDataFrame(file_table.to_pandas()).repartition(n_tasks, "file_index")

    # one cached copy: ``marked`` (every record, duplicates re-labelled), built by the first action below;
    # the parse runs once and every later action reads that cache
    records = files_df.mapInArrow(
        _read_partition(tokenizer_path, tokenizer_pattern, max_doc_bytes), spark_schema(RECORD_SCHEMA)
    )
    first = Window.partitionBy("source", "doc_id").orderBy("file_index", "record_index")
    marked = (
        records.withColumn("_rank", F.when(F.col("kind") == "doc", F.row_number().over(first)).otherwise(F.lit(1)))
        .withColumn("kind", F.when(F.col("_rank") > 1, F.lit("quarantine")).otherwise(F.col("kind")))
        .withColumn("reason", F.when(F.col("_rank") > 1, F.lit("duplicate_id")).otherwise(F.col("reason")))
        .withColumn(
            "detail",
            F.when(F.col("_rank") > 1, F.concat(F.lit(DUPLICATE_DETAIL), F.col("doc_id")))
            .otherwise(F.col("detail")),
        )
        .withColumn("raw", F.when(F.col("_rank") > 1, F.substring("text", 1, RAW_PREVIEW_CHARS)).otherwise(F.col("raw")))
        .drop("_rank")
    ).persist()

    input_counts = {r["source"]: r["count"] for r in marked.groupBy("source").count().collect()}  # = records
    doc_bytes = {
        r["source"]: int(r["b"] or 0)
        for r in marked.where("kind = 'doc'").groupBy("source").agg(F.sum("n_bytes").alias("b")).collect()
    }
    n_files = {s: files_per_source(doc_bytes.get(s, 0), target_file_mb) for s in sources}
    bucket_expr = F.lit(0)
    for source, count in n_files.items():
        if count > 1:
            bucket_expr = F.when(F.col("source") == source, F.pmod(F.xxhash64("doc_id"), F.lit(count))).otherwise(bucket_expr)
    out_root = str(Path(out_root).resolve())
    docs = marked.where("kind = 'doc'").withColumn("bucket", bucket_expr.cast("int"))
    written_docs = docs.groupBy("source", "bucket").applyInArrow(_write_group(out_root, "docs"), spark_schema(WRITTEN_SCHEMA))
    quarantined = marked.where("kind = 'quarantine'").withColumn("bucket", F.lit(0))
    written_q = quarantined.groupBy("source", "bucket").applyInArrow(_write_group(out_root, "quarantine"), spark_schema(WRITTEN_SCHEMA))
    written = written_docs.unionByName(written_q).collect()
    marked.unpersist()

    return _stats(sources, input_counts, [r.asDict() for r in written], files, started)


class TooLargeForOneProcess(Exception):
    """The in-process ingest decoded more than its limit (a small compressed input that expands a lot):
    the caller runs the Spark job instead."""


def run_ingest_in_process(
    *,
    sources: Mapping[str, SourceSpec],
    out_root: str | Path,
    tokenizer_path: str = "default",
    tokenizer_pattern: str | None = None,
    max_doc_bytes: int = 10_000_000,
    target_file_mb: float = 256.0,
    exclude: tuple[str, ...] = (),
    files: list[dict] | None = None,
    max_decoded_bytes: int | None = None,
) -> dict:
    """:func:`run_ingest`'s files and stats without Spark, for inputs too small to pay for a JVM.

    The same steps in one process: :func:`~mixweave.data.ingest.ingest_file` over the files in
    (source, path) order; per source, :func:`~mixweave.data.ingest.quarantine_duplicate_ids` (first
    occurrence by file, then record, wins); docs split into the same ``ceil(bytes / target_file_mb)``
    files by Spark's ``pmod(xxhash64(doc_id), n)`` (:func:`~mixweave.data.ingest.spark_hash_buckets`);
    each file written by :func:`write_output_group`. Same bytes as the Spark job (tests check it).
    Cost: O(input bytes) reading and tokenising on one core, and one source's records in memory at
    a time; no JVM start (seconds, more than the job on a small input). The input's size on disk says
    little of a compressed file's records: past ``max_decoded_bytes`` of decoded records (Arrow
    bytes, all sources together) it raises :class:`TooLargeForOneProcess`, having written files the
    caller must discard."""
    from ..data.progress import Progress
    from ..data.tokenizer import load_tokenizer

    started = time.perf_counter()
    files = files if files is not None else expand_sources(sources, exclude=(*exclude, str(out_root)))
    tokenizer = load_tokenizer(tokenizer_path, tokenizer_pattern)
    out_root = str(Path(out_root).resolve())
    input_counts: dict[str, int] = {}
    written: list[dict] = []
    decoded = 0
    with Progress(len(files), unit="file", label="ingest") as progress:
        for name in sorted(sources):
            batches = []
            for f in (f for f in files if f["source"] == name):
                for batch in ingest_file(source=name, path=f["path"], file_index=f["file_index"],
                                         tokenizer=tokenizer, text_field=f["text_field"], id_field=f["id_field"],
                                         max_doc_bytes=max_doc_bytes, id_key=f["id_key"], file_error=f["file_error"]):
                    decoded += batch.nbytes
                    if max_decoded_bytes is not None and decoded > max_decoded_bytes:
                        raise TooLargeForOneProcess(f"more than {max_decoded_bytes / 2**20:.0f} MiB of records "
                                                    f"decoded by {f['path']}")
                    batches.append(batch)
                    progress.update(0, records=batch.num_rows)
                progress.update(1)
            records = quarantine_duplicate_ids(pa.Table.from_batches(batches, schema=RECORD_SCHEMA))
            input_counts[name] = records.num_rows
            written += _write_source(records, out_root, name, target_file_mb)
    return _stats(sources, input_counts, written, files, started)


def _write_source(records: pa.Table, out_root: str, source: str, target_file_mb: float) -> list[dict]:
    """One source's marked records as the Spark job writes them: docs in ``ceil(bytes / target)``
    xxhash64 buckets, the quarantined rows in one file."""
    kinds = records.column("kind")
    docs = records.filter(pc.equal(kinds, "doc"))
    quarantined = records.filter(pc.equal(kinds, "quarantine"))
    n_files = files_per_source(pc.sum(docs.column("n_bytes")).as_py() or 0, target_file_mb)
    buckets = pa.array(spark_hash_buckets(docs.column("doc_id").to_pylist(), n_files), type=pa.int64())
    written = [write_output_group(docs.filter(pc.equal(buckets, b)), out_root, "docs", source, b)
               for b in sorted(set(buckets.to_pylist()))]
    if quarantined.num_rows:
        written.append(write_output_group(quarantined, out_root, "quarantine", source, 0))
    return written


def _stats(sources: Mapping[str, SourceSpec], input_counts: Mapping[str, int], written: list[dict], files: list[dict],
           started: float) -> dict:
    stats = summarize(sources, input_counts, written)
    stats["timings"] = {"ingest_s": round(time.perf_counter() - started, 3)}
    stats["n_files_read"] = len(files)
    stats["input_bytes"] = sum(input_file_size(f["path"]) for f in files)
    return stats


def summarize(sources: Mapping[str, SourceSpec], input_counts: Mapping[str, int], written: list[dict]) -> dict:
    """Per-source docs/tokens/bytes/histogram and quarantine by reason; checks input = kept + quarantined."""
    per_source: dict[str, dict] = {}
    for name in sorted(sources):
        mine = [w for w in written if w["source"] == name]
        docs = [w for w in mine if w["kind"] == "docs"]
        reasons: dict[str, int] = {}
        for w in mine:
            if w["kind"] == "quarantine":
                items = w["reasons"].items() if isinstance(w["reasons"], dict) else (w["reasons"] or [])
                for key, value in items:
                    reasons[key] = reasons.get(key, 0) + value
        kept = sum(w["rows"] for w in docs)
        quarantined = sum(reasons.values())
        n_input = int(input_counts.get(name, 0))
        if kept + quarantined != n_input:
            raise RuntimeError(f"accounting bug for source {name}: input {n_input} != kept {kept} + quarantined {quarantined}")
        per_source[name] = {
            "paths": list(sources[name].paths),
            "n_input": n_input,
            "n_docs": kept,
            "n_quarantined": quarantined,
            "quarantine_reasons": dict(sorted(reasons.items())),
            "n_tokens": sum(w["n_tokens"] for w in docs),
            "n_bytes": sum(w["n_bytes"] for w in docs),
            "files": sorted(w["file"] for w in docs),
            "length_histogram": {"unit": "tokens", "log2_bin_lower_edges": histogram_edges(),
                                 "counts": merge_histograms(w["histogram"] for w in docs)},
        }
    totals = {
        key: sum(s[key] for s in per_source.values())
        for key in ("n_input", "n_docs", "n_quarantined", "n_tokens", "n_bytes")
    }
    return {"sources": per_source, "totals": totals}
