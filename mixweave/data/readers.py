"""Record readers for ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst`` and ``.parquet`` with quarantine.

:func:`read_file` turns one input file into a stream of :class:`RawRecord` -- either a parsed record
(``reason is None``) or a rejected one with its reason. It never raises on bad *content*: invalid
JSON or UTF-8 lines, a truncated compressed stream, a last line cut off, or a file that cannot be
decoded at all become quarantine rows, and every readable record before the damage is kept.
:func:`validate_record` then applies the per-record rules (text present, a string, non-empty,
under the size limit, a usable id). Both are pure and cheap to unit-test; the Spark ingest job
maps them over files.

Counting rule (so ``input = kept + quarantined`` is exact): every physical line of a JSON Lines
file is one input record (blank lines are skipped and not counted), every parquet row is one
record, and a file-level failure (unreadable file, truncated stream) adds exactly one record.
"""

from __future__ import annotations

import gzip
import json
import unicodedata
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .schema import RAW_PREVIEW_BYTES

SUPPORTED_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".jsonl.zstd", ".parquet", ".json")


@dataclass(frozen=True)
class RawRecord:
    """One input record: parsed ``value`` or a quarantine ``reason`` + ``detail`` + ``raw`` preview."""

    record_index: int
    value: dict | None
    reason: str | None = None
    detail: str = ""
    raw: str = ""


def _preview(raw: bytes | str) -> str:
    if isinstance(raw, bytes):
        raw = raw[:RAW_PREVIEW_BYTES].decode("utf-8", errors="replace")
    return raw[:RAW_PREVIEW_BYTES]


def file_format(path: str) -> str:
    """``jsonl`` | ``jsonl.gz`` | ``jsonl.zst`` | ``parquet`` from the file name (case-insensitive)."""
    name = path.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".gz"):
        return "jsonl.gz"
    if name.endswith(".zst") or name.endswith(".zstd"):
        return "jsonl.zst"
    return "jsonl"


class TruncatedStream(EOFError):
    """A compressed stream ended before its end-of-frame marker."""


def _zstd_lines(path: str) -> Iterator[bytes]:
    """Lines of a (multi-frame) zstd file; raises TruncatedStream when the last frame is incomplete.

    ``zstandard``'s stream_reader returns EOF silently on a truncated frame, so frames are fed to a
    ``decompressobj`` by hand and its ``eof`` flag is checked at the end.
    """
    import zstandard

    decompressor = zstandard.ZstdDecompressor()
    dobj = decompressor.decompressobj()
    buffer = b""
    frame_open = False
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            while chunk:
                frame_open = True
                buffer += dobj.decompress(chunk)
                chunk = b""
                if dobj.eof:
                    chunk = dobj.unused_data
                    dobj = decompressor.decompressobj()
                    frame_open = bool(chunk)
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                yield line + b"\n"
    if buffer:
        yield buffer
    if frame_open:
        raise TruncatedStream("zstd stream ended before the end of its frame")


def _iter_lines(path: str, fmt: str) -> Iterator[bytes]:
    if fmt == "jsonl.zst":
        yield from _zstd_lines(path)
        return
    opener = gzip.open if fmt == "jsonl.gz" else open
    with opener(path, "rb") as fh:
        yield from fh


def _parse_json_line(index: int, line: bytes) -> RawRecord:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RawRecord(index, None, "invalid_utf8", f"byte {exc.start}: {exc.reason}", _preview(line))
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return RawRecord(index, None, "invalid_json", f"{exc.msg} at column {exc.colno}", _preview(text))
    if not isinstance(value, dict):
        return RawRecord(index, None, "invalid_json", f"a JSON {type(value).__name__}, not an object", _preview(text))
    return RawRecord(index, value)


def _stream_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [EOFError, OSError, zlib.error]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover - core dependency
        pass
    return tuple(errors)


_STREAM_ERRORS = _stream_errors()


def _read_jsonl(path: str, fmt: str) -> Iterator[RawRecord]:
    index = 0
    pending = b""
    try:
        for line in _iter_lines(path, fmt):
            if not line.endswith(b"\n"):
                pending = line  # the last line of the file (or of a truncated stream)
                break
            if line.strip():
                yield _parse_json_line(index, line.rstrip(b"\r\n"))
                index += 1
    except _STREAM_ERRORS as exc:
        # gzip: EOFError on truncation, BadGzipFile (an OSError) on garbage; zstd: ZstdError / TruncatedStream.
        yield from _finish_pending(index, pending)
        kind = "unreadable_file" if index == 0 and not pending else "truncated_file"
        yield RawRecord(index + (1 if pending.strip() else 0), None, kind, f"{type(exc).__name__}: {exc}", "")
        return
    yield from _finish_pending(index, pending)


def _finish_pending(index: int, pending: bytes) -> Iterator[RawRecord]:
    """A final line without newline: keep it if it parses, else report the file as truncated."""
    if not pending.strip():
        return
    record = _parse_json_line(index, pending.rstrip(b"\r"))
    if record.reason == "invalid_json":
        yield RawRecord(index, None, "truncated_file", "the last line is cut off: " + record.detail, record.raw)
    else:
        yield record


def _read_parquet(path: str, batch_size: int = 4096) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for corrupt footers
        yield RawRecord(0, None, "unreadable_file", f"{type(exc).__name__}: {exc}", "")
        return
    index = 0
    try:
        for batch in parquet.iter_batches(batch_size=batch_size):
            for row in batch.to_pylist():
                yield RawRecord(index, row)
                index += 1
    except Exception as exc:  # a corrupt row group: keep what was read, report the rest once
        yield RawRecord(index, None, "truncated_file", f"{type(exc).__name__}: {exc}", "")


def read_file(path: str) -> Iterator[RawRecord]:
    """Stream the records of one input file; bad content becomes quarantine records, never an exception."""
    fmt = file_format(path)
    if fmt == "parquet":
        return _read_parquet(path)
    return _read_jsonl(path, fmt)


def normalize_text(text: str) -> str:
    """NFC and ``\\r\\n``/``\\r`` -> ``\\n``; nothing else (content filters belong to later stages)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize("NFC", text)


@dataclass(frozen=True)
class ValidRecord:
    doc_id: str
    text: str
    meta: dict


def validate_record(
    value: dict[str, Any],
    *,
    source: str,
    default_id: str,
    text_field: str = "text",
    id_field: str = "id",
    max_doc_bytes: int = 10_000_000,
) -> tuple[ValidRecord | None, str | None, str]:
    """Apply the per-record rules. Returns ``(record, None, "")`` or ``(None, reason, detail)``.

    The id is ``value[id_field]`` when present (strings kept, integers stringified), otherwise
    ``default_id`` (``<source>/<file name>:<line>``), so ids are deterministic either way.
    Every other field (minus text and id) lands in ``meta``; a nested ``meta`` object is merged.
    """
    if text_field not in value or value[text_field] is None:
        keys = ", ".join(sorted(map(str, value))[:8])
        return None, "missing_text", f"no field {text_field!r} (fields: {keys}); set text_field for source {source!r}"
    text = value[text_field]
    if not isinstance(text, str):
        return None, "non_string_text", f"field {text_field!r} is a {type(text).__name__}"
    if not text.strip():
        return None, "empty_text", "text is empty or whitespace"
    raw_id = value.get(id_field)
    if raw_id is None:
        doc_id = default_id
    elif isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        return None, "bad_id", f"field {id_field!r} is a {type(raw_id).__name__}"
    else:
        doc_id = str(raw_id)
        if not doc_id.strip():
            return None, "bad_id", f"field {id_field!r} is empty"
    text = normalize_text(text)
    n_bytes = len(text.encode("utf-8"))
    if n_bytes > max_doc_bytes:
        return None, "too_long", f"{n_bytes} bytes > ingest.max_doc_bytes={max_doc_bytes}"
    meta: dict[str, Any] = {}
    nested = value.get("meta")
    if isinstance(nested, dict):
        meta.update(nested)
    for key, item in value.items():
        if key not in (text_field, id_field, "meta"):
            meta[key] = item
    return ValidRecord(doc_id, text, meta), None, ""


def default_doc_id(source: str, path: str, record_index: int) -> str:
    return f"{source}/{Path(path).name}:{record_index}"
