"""Arrow schemas of the ingest artifacts and the quarantine reasons.

``docs/``: one row per kept document. ``meta`` is a JSON object serialised as a string so the
schema never changes with the input's extra fields.
``quarantine/``: one row per rejected record with a machine-readable ``reason`` (one of
:data:`QUARANTINE_REASONS`) and a human ``detail``; ``raw`` holds at most the first
:data:`RAW_PREVIEW_BYTES` of the record so the audit trail stays small.
"""

from __future__ import annotations

import pyarrow as pa

DOCS_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("text", pa.large_string(), nullable=False),
        pa.field("n_bytes", pa.int64(), nullable=False),
        pa.field("n_tokens", pa.int64(), nullable=False),
        pa.field("meta", pa.string(), nullable=False),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("record_index", pa.int64(), nullable=False),
        pa.field("doc_id", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("raw", pa.string(), nullable=False),
    ]
)

# Every reason a record can be quarantined for. A record is counted once, under its first reason.
QUARANTINE_REASONS = {
    "invalid_json": "the line is not a strict JSON object (bad syntax, NaN/Infinity, an unusable number)",
    "invalid_utf8": "the record's bytes are not valid UTF-8",
    "invalid_unicode": "a string holds a lone surrogate escape such as \\ud800 (not Unicode text)",
    "too_deep": "the JSON nests deeper than the readers allow (128 levels)",
    "missing_text": "the configured text field is absent or null",
    "non_string_text": "the text field is not a string",
    "empty_text": "the text is empty or only whitespace",
    "too_long": "the text is longer than ingest.max_doc_bytes (or its line is longer than 6x that + 1 MiB)",
    "duplicate_id": "another record of the run already has this doc_id (the first one is kept)",
    "bad_id": "the id field is present but not a string or integer",
    "truncated_file": "the file ends mid-stream (a truncated gzip/zstd/bz2/xz stream or a last line cut off)",
    "unreadable_file": "the file cannot be opened or decoded at all (corrupt parquet, not gzip, a dangling "
                       "symlink, a directory, a non-UTF-8 file name, ...)",
    "unsupported_compression": "the file is compressed in a format the readers do not read (zip, 7z, lz4, ...)",
    "reader_error": "an unexpected error ended the file (a reader bug); the records before it are kept",
}

RAW_PREVIEW_BYTES = 2048
