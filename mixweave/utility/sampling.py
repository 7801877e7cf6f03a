"""Seeded, stratified document sampling for utility estimation, identical on any partitioning.

Every document gets a key: the first 64 bits of ``sha256(f"{seed}\x1f{source}\x1f{doc_id}")``
(big-endian, so the order of keys is the order of their hex prefixes); a source's sample is its
``per_source`` documents with the smallest keys (ties broken by doc_id). The key depends only on
the document, so the sample is the same whatever the row order, file layout or number of Spark
partitions, and growing ``per_source`` only adds documents (nested samples). Stratification is by
source; within a source the sample is uniform without replacement.

- :func:`sample_docs`: the pure core over a ``pyarrow.Table``.
- :func:`load_sampled_docs`: one machine, two passes over parquet (ids first, then the texts of the
  chosen rows only), so memory holds ids, not the corpus.
- :func:`sample_docs_spark`: the same key in Spark SQL (``sha2``, no Python workers) and a
  ``row_number`` window per source; Spark (>= 3.5) pushes the row limit below the shuffle
  (a per-partition top-k), so only ``partitions x per_source`` rows per source move. The result
  equals the pure core's.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixweave.data.manifest import MANIFEST_NAME, artifact_files
from mixweave.errors import ConfigError, InputError

log = logging.getLogger(__name__)

DOC_COLUMNS = ("doc_id", "source", "text")
KEY_COLUMN = "_sample_key"


def sample_keys(sources: Sequence[str], doc_ids: Sequence[str], seed: int) -> np.ndarray:
    """uint64 key per document: the first 8 bytes (big-endian) of
    ``sha256(f"{seed}\\x1f{source}\\x1f{doc_id}")`` -- what Spark's ``sha2`` gives too.
    Cost: one hash per document (~1 us)."""
    out = np.empty(len(doc_ids), dtype=np.uint64)
    for i, (s, d) in enumerate(zip(sources, doc_ids)):
        h = hashlib.sha256(f"{seed}\x1f{s}\x1f{d}".encode()).digest()
        out[i] = int.from_bytes(h[:8], "big")
    return out


def _per_source_count(per_source: int | Mapping[str, int] | None, source: str) -> int | None:
    if per_source is None:
        return None
    if isinstance(per_source, Mapping):
        n = per_source.get(source, per_source.get("*"))
        return None if n is None else int(n)
    return int(per_source)


def sample_docs(table: Any, per_source: int | Mapping[str, int] | None, seed: int = 0) -> Any:
    """The seeded stratified sample of a documents table (columns ``doc_id``, ``source``, ...).

    ``per_source``: an int for every source, a mapping ``{source: n}`` (``"*"`` = default for the
    rest; a source with no entry is taken whole), or None for everything. Rows come back sorted by
    (source, key, doc_id), with all input columns. Cost: O(N) hashes + a sort per source."""
    import pyarrow as pa

    for col in ("doc_id", "source"):
        if col not in table.column_names:
            raise InputError(f"the documents table needs a {col!r} column (has {table.column_names})")
    if isinstance(per_source, int) and per_source < 1:
        raise ConfigError(f"per_source must be >= 1, got {per_source}")
    if table.num_rows == 0:
        return table
    sources = table.column("source").to_pylist()
    ids = [str(x) for x in table.column("doc_id").to_pylist()]
    keys = sample_keys(sources, ids, seed)
    src = np.asarray(sources, dtype=object)
    idx_all = np.arange(table.num_rows)
    chosen: list[np.ndarray] = []
    for s in sorted(set(sources)):
        idx = idx_all[src == s]
        order = sorted(idx.tolist(), key=lambda i: (int(keys[i]), ids[i]))
        n = _per_source_count(per_source, s)
        chosen.append(np.asarray(order if n is None else order[:n], dtype=np.int64))
    take = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    out = table.take(pa.array(take))
    counts = {s: int(np.sum(src[take] == s)) for s in sorted(set(sources))}
    log.info("sampled %d documents (seed %d): %s", out.num_rows, seed, counts)
    return out


def resolve_docs_paths(spec: str | Path | Sequence[str | Path]) -> list[str]:
    """Files named by ``spec``: an ingest artifact (``DIR/docs/<source>/part-*.parquet``), a docs
    folder, a folder of per-source folders of ``*.jsonl``, or glob(s) of parquet / jsonl files."""
    specs = [spec] if isinstance(spec, (str, Path)) else list(spec)
    files: list[str] = []
    for item in specs:
        p = Path(item)
        if p.is_dir() and (p / MANIFEST_NAME).is_file():  # an ingest artifact: only the files it lists
            files.extend(str(f) for f in artifact_files(p, ".parquet") if f.parent.parent.name == "docs")
        elif p.is_dir():
            for pattern in ("docs/*/*.parquet", "*/*.parquet", "*.parquet", "*/*.jsonl", "*.jsonl"):
                hits = sorted(glob.glob(str(p / pattern)))
                if hits:
                    files.extend(hits)
                    break
        elif p.is_file():
            files.append(str(p))
        else:
            files.extend(sorted(glob.glob(str(item))))
    files = [f for f in dict.fromkeys(files) if f.endswith((".parquet", ".jsonl"))]
    if not files:
        raise InputError(f"no documents found at {spec}: give an ingest output folder (with docs/), "
                         "a folder of per-source parquet/jsonl files, or a glob such as 'docs/*/*.parquet'")
    return files


def read_jsonl_docs(paths: Sequence[str], text_field: str = "text") -> Any:
    """Documents from jsonl files (the corpus layout ``<source>/*.jsonl``): ``source`` is the record's
    ``source`` or else the parent folder's name; ``doc_id`` is its ``id``/``doc_id`` or ``file:line``.
    Records without a string text are skipped with a count in the log."""
    import pyarrow as pa

    cols: dict[str, list[str]] = {c: [] for c in DOC_COLUMNS}
    skipped = 0
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line_no, line in enumerate(fh):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    skipped += 1
                    continue
                text = rec.get(text_field) if isinstance(rec, dict) else None
                if not isinstance(text, str) or not text.strip():
                    skipped += 1
                    continue
                cols["text"].append(text)
                cols["source"].append(str(rec.get("source") or Path(path).parent.name))
                cols["doc_id"].append(str(rec.get("doc_id") or rec.get("id") or f"{Path(path).name}:{line_no}"))
    if skipped:
        log.warning("skipped %d jsonl records without a usable %r field", skipped, text_field)
    return pa.table({c: pa.array(v, pa.string()) for c, v in cols.items()})


def load_sampled_docs(spec: str | Path | Sequence[str | Path], per_source: int | Mapping[str, int] | None,
                      seed: int = 0) -> Any:
    """The sample of :func:`sample_docs` read from files on one machine (columns doc_id, source, text).

    Parquet is read in two passes (``doc_id, source`` -> keys -> the texts of the chosen ids only);
    jsonl is read whole (it is the small-corpus path)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    files = resolve_docs_paths(spec)
    parquet = [f for f in files if f.endswith(".parquet")]
    jsonl = [f for f in files if f.endswith(".jsonl")]
    parts = []
    if parquet:
        dataset = ds.dataset(parquet, format="parquet")
        missing = [c for c in DOC_COLUMNS if c not in dataset.schema.names]
        if missing:
            raise InputError(f"parquet documents lack columns {missing}; run the ingest stage or give "
                             "files with doc_id, source, text")
        ids = dataset.to_table(columns=["doc_id", "source"])
        chosen = sample_docs(ids, per_source, seed)
        wanted = pa.array(chosen.column("doc_id").to_pylist(), pa.string())
        rows = dataset.to_table(columns=list(DOC_COLUMNS), filter=pc.field("doc_id").isin(wanted))
        parts.append(rows.cast(pa.schema([(c, pa.string()) for c in DOC_COLUMNS])))
    if jsonl:
        parts.append(read_jsonl_docs(jsonl))
    table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    return sample_docs(table, per_source, seed).select(list(DOC_COLUMNS))


def sample_docs_spark(spark: Any, docs_paths: str | Path | Sequence[str | Path],
                      per_source: int | Mapping[str, int] | None, seed: int = 0) -> Any:
    """Spark version of :func:`load_sampled_docs` for corpora that do not fit one machine.

    The key is computed in Spark SQL (``substr(sha2(concat_ws(...), 256), 1, 16)``, equal in order
    to :func:`sample_keys`), and a ``row_number`` over (source ordered by key, doc_id) keeps the
    first ``per_source`` rows per source. Returns a pyarrow Table (doc_id, source, text) equal to
    the pure core's sample, whatever the partitioning."""
    import pyarrow as pa
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    files = [f for f in resolve_docs_paths(docs_paths) if f.endswith(".parquet")]
    if not files:
        raise InputError(f"sample_docs_spark reads parquet documents; {docs_paths} has none "
                         "(run the ingest stage, or use load_sampled_docs for jsonl)")
    if isinstance(per_source, int) and per_source < 1:
        raise ConfigError(f"per_source must be >= 1, got {per_source}")
    df = spark.read.parquet(*files).select(*(F.col(c).cast("string").alias(c) for c in DOC_COLUMNS))
    key = F.substring(F.sha2(F.concat_ws("\x1f", F.lit(str(seed)), F.col("source"), F.col("doc_id")), 256), 1, 16)
    df = df.withColumn(KEY_COLUMN, key)
    if per_source is not None:
        if isinstance(per_source, Mapping):
            default = per_source.get("*")
            limit = F.lit(None if default is None else int(default)).cast("int")
            for name, n in per_source.items():
                if name != "*":
                    limit = F.when(F.col("source") == F.lit(name), F.lit(int(n))).otherwise(limit)
        else:
            limit = F.lit(int(per_source))
        rank = F.row_number().over(Window.partitionBy("source").orderBy(KEY_COLUMN, "doc_id"))
        df = df.withColumn("_rank", rank).where(limit.isNull() | (F.col("_rank") <= limit))
    picked = df.select(*DOC_COLUMNS)
    table = picked.toArrow() if hasattr(picked, "toArrow") else pa.Table.from_pandas(picked.toPandas())
    table = table.cast(pa.schema([(c, pa.string()) for c in DOC_COLUMNS]))
    return sample_docs(table, per_source, seed).select(list(DOC_COLUMNS))
