"""The ingest core: one input file -> normalised document rows + quarantine rows.

:func:`ingest_file` is pure (given a tokenizer) and is what the Spark job maps over files; it
reads with :mod:`mixweave.data.readers`, validates every record, tokenises kept texts in batches
and returns one Arrow table of :data:`RECORD_SCHEMA` rows, each either ``kind='doc'`` or
``kind='quarantine'``. Cost: one pass over the file, O(bytes) plus tokenisation.
:func:`write_docs_file` sorts one output group by doc_id and writes it as parquet with fixed
settings, so the bytes depend only on the rows, never on Spark's partitioning.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .readers import default_doc_id, read_file, safe_text, strict_json, validate_record
from .schema import DOCS_SCHEMA, QUARANTINE_SCHEMA
from .tokenizer import Tokenizer

RECORD_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("source", pa.string()),
        ("file_index", pa.int64()),
        ("path", pa.string()),
        ("record_index", pa.int64()),
        ("doc_id", pa.string()),
        ("text", pa.large_string()),
        ("n_bytes", pa.int64()),
        ("n_tokens", pa.int64()),
        ("meta", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw", pa.string()),
    ]
)

LOG = logging.getLogger(__name__)

# Token-length histogram: bin b counts docs with 2^b <= n_tokens < 2^(b+1) (bin 0 also holds 0..1).
HISTOGRAM_BINS = 32


def _json_default(value):
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _raw_preview(value: dict) -> str:
    """The quarantine ``raw`` of a parsed record: its JSON, cut to 2 KB, always valid UTF-8."""
    return safe_text(json.dumps(value, ensure_ascii=False, default=_json_default)[:2048])


def ingest_file(
    *,
    source: str,
    path: str,
    file_index: int,
    tokenizer: Tokenizer,
    text_field: str = "text",
    id_field: str = "id",
    max_doc_bytes: int = 10_000_000,
    batch_rows: int = 4096,
    id_key: str | None = None,
    file_error: str | None = None,
) -> Iterator[pa.RecordBatch]:
    """Yield RecordBatches of :data:`RECORD_SCHEMA` for one file (docs and quarantine interleaved).

    ``id_key`` names the file in default doc ids (the path relative to the source's glob root;
    the file name when not given). ``file_error`` (set when the file cannot even be named or
    listed, e.g. a non-UTF-8 file name) makes the file one ``unreadable_file`` row without reading.
    An unexpected error while reading ends the file with one ``reader_error`` row (the records
    before it are kept) instead of failing the whole job.
    """
    rows: dict[str, list] = {name: [] for name in RECORD_SCHEMA.names}
    key = id_key if id_key is not None else os.path.basename(path)

    def add(kind, index, doc_id=None, text=None, n_bytes=None, meta=None, reason=None, detail=None, raw=None):
        rows["kind"].append(kind)
        rows["source"].append(source)
        rows["file_index"].append(file_index)
        rows["path"].append(path)
        rows["record_index"].append(index)
        rows["doc_id"].append(doc_id)
        rows["text"].append(text)
        rows["n_bytes"].append(n_bytes)
        rows["n_tokens"].append(None)
        rows["meta"].append(meta)
        rows["reason"].append(reason)
        rows["detail"].append(detail)
        rows["raw"].append(raw)

    def flush() -> pa.RecordBatch:
        texts = [t for k, t in zip(rows["kind"], rows["text"]) if k == "doc"]
        counts = iter(tokenizer.count_batch(texts)) if texts else iter(())
        rows["n_tokens"] = [next(counts) if k == "doc" else None for k in rows["kind"]]
        batch = pa.RecordBatch.from_pydict(rows, schema=RECORD_SCHEMA)
        for name in rows:
            rows[name] = []
        return batch

    if file_error is not None:
        add("quarantine", 0, reason="unreadable_file", detail=file_error, raw="")
        yield flush()
        return
    next_index = 0
    try:
        for record in read_file(path, max_doc_bytes=max_doc_bytes):
            next_index = record.record_index  # the record in hand until it is added
            if record.reason is not None:
                add("quarantine", record.record_index, reason=record.reason, detail=record.detail, raw=record.raw)
            else:
                valid, reason, detail = validate_record(
                    record.value,
                    source=source,
                    default_id=default_doc_id(source, key, record.record_index),
                    text_field=text_field,
                    id_field=id_field,
                    max_doc_bytes=max_doc_bytes,
                )
                if valid is None:
                    add("quarantine", record.record_index, reason=reason, detail=detail, raw=_raw_preview(record.value))
                else:
                    meta = strict_json(valid.meta, default=_json_default)
                    add("doc", record.record_index, valid.doc_id, valid.text, len(valid.text.encode("utf-8")), meta)
            next_index = record.record_index + 1
            if len(rows["kind"]) >= batch_rows:
                yield flush()
    except Exception as exc:  # a reader bug must cost one file's tail, not the whole ingest
        LOG.exception("reading %s failed after %d records", path, next_index)
        add("quarantine", next_index, reason="reader_error",
            detail=safe_text(f"{type(exc).__name__}: {exc}"[:1000]) + " (a mixweave reader bug: please report it)",
            raw="")
    if rows["kind"]:
        yield flush()


def token_length_histogram(n_tokens: np.ndarray) -> list[int]:
    """Counts per log2 bin (see :data:`HISTOGRAM_BINS`)."""
    n_tokens = np.asarray(n_tokens, dtype=np.int64)
    bins = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
    if n_tokens.size:
        idx = np.floor(np.log2(np.maximum(n_tokens, 1))).astype(np.int64)
        np.add.at(bins, np.clip(idx, 0, HISTOGRAM_BINS - 1), 1)
    return bins.tolist()


def histogram_edges() -> list[int]:
    return [2**b for b in range(HISTOGRAM_BINS)]


def write_docs_file(table: pa.Table, path: str | Path) -> dict:
    """Sort by doc_id, cast to :data:`DOCS_SCHEMA`, write parquet (zstd); return counts."""
    table = table.select(DOCS_SCHEMA.names).sort_by([("doc_id", "ascending")])
    table = table.cast(DOCS_SCHEMA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd", row_group_size=16384, write_statistics=True)
    n_tokens = table.column("n_tokens").to_numpy()
    return {
        "rows": table.num_rows,
        "n_tokens": int(n_tokens.sum()),
        "n_bytes": int(pa.compute.sum(table.column("n_bytes")).as_py() or 0),
        "histogram": token_length_histogram(n_tokens),
    }


def write_quarantine_file(table: pa.Table, path: str | Path) -> dict:
    """Sort by (path, record_index), write parquet; return rows and counts by reason."""
    table = table.select(QUARANTINE_SCHEMA.names).sort_by([("path", "ascending"), ("record_index", "ascending")])
    table = table.cast(QUARANTINE_SCHEMA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd", row_group_size=16384)
    reasons: dict[str, int] = {}
    for reason in table.column("reason").to_pylist():
        reasons[reason] = reasons.get(reason, 0) + 1
    return {"rows": table.num_rows, "reasons": reasons}


DUPLICATE_DETAIL = "duplicate of an earlier record with doc_id "
RAW_PREVIEW_CHARS = 2048


def quarantine_duplicate_ids(records: pa.Table) -> pa.Table:
    """One source's :data:`RECORD_SCHEMA` rows, in (file_index, record_index) order, with every doc whose
    doc_id an earlier doc holds turned into a ``duplicate_id`` quarantine row (its first
    :data:`RAW_PREVIEW_CHARS` characters kept as ``raw``): the first occurrence wins, as the Spark job's
    window over (source, doc_id) ordered by (file_index, record_index) decides. Cost: one pass, a set
    of the source's ids."""
    kinds = records.column("kind").to_pylist()
    ids = records.column("doc_id").to_pylist()
    seen: set[str] = set()
    duplicate = []
    for kind, doc_id in zip(kinds, ids):
        repeated = kind == "doc" and doc_id in seen
        duplicate.append(repeated)
        if kind == "doc":
            seen.add(doc_id)
    if not any(duplicate):
        return records
    columns = {name: records.column(name).to_pylist() for name in ("kind", "reason", "detail", "raw")}
    texts = records.column("text").to_pylist()
    for row, repeated in enumerate(duplicate):
        if repeated:
            columns["kind"][row] = "quarantine"
            columns["reason"][row] = "duplicate_id"
            columns["detail"][row] = DUPLICATE_DETAIL + ids[row]
            columns["raw"][row] = texts[row][:RAW_PREVIEW_CHARS]
    for name, values in columns.items():
        records = records.set_column(records.schema.get_field_index(name), RECORD_SCHEMA.field(name),
                                     pa.array(values, type=RECORD_SCHEMA.field(name).type))
    return records


def spark_hash_buckets(doc_ids: list[str], n_files: int) -> list[int]:
    """Spark's ``pmod(xxhash64(doc_id), n_files)`` for each id: XXH64 of the UTF-8 bytes with seed 42,
    read as a signed 64-bit integer, modulo ``n_files`` (non-negative), so both ingest paths put every
    document in the same output file."""
    import xxhash

    if n_files <= 1:
        return [0] * len(doc_ids)
    out = []
    for doc_id in doc_ids:
        digest = xxhash.xxh64_intdigest(doc_id.encode("utf-8"), seed=42)
        out.append((digest - (1 << 64) if digest >= 1 << 63 else digest) % n_files)
    return out


def files_per_source(n_bytes: int, target_file_mb: float) -> int:
    return max(1, math.ceil(n_bytes / (target_file_mb * 1024 * 1024)))


def merge_histograms(histograms: Iterable[list[int]]) -> list[int]:
    total = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
    for hist in histograms:
        total += np.asarray(hist, dtype=np.int64)
    return total.tolist()
