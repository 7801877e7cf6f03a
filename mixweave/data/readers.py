"""Record readers for JSON Lines (plain, gzip, zstd, bzip2, xz) and parquet, with quarantine.

:func:`read_file` turns one input file into a stream of :class:`RawRecord` -- either a parsed record
(``reason is None``) or a rejected one with its reason. It never raises on bad *content*: invalid
JSON or UTF-8 lines, lone surrogate escapes, JSON nested too deep, non-standard numbers, a line
longer than the line limit (decompression bombs included), a truncated compressed stream, a last
line cut off, or a file that cannot be decoded at all become quarantine rows, and every readable
record before the damage is kept. :func:`validate_record` then applies the per-record rules (text
present, a string, non-empty, under the size limit, a usable id). :func:`expand_glob` finds the
input files of a pattern without following symlink loops, reading each real file once. All are
pure and cheap to unit-test; the Spark ingest job maps them over files.

Counting rule (so ``input = kept + quarantined`` is exact): every physical line of a JSON Lines
file is one input record (blank lines are skipped and not counted), every parquet row is one
record, and a file-level failure (unreadable file, truncated stream, unsupported compression) adds
exactly one record (a truncated stream's partial last line is part of that record).

Memory: JSON Lines are decoded in chunks of at most :data:`READ_CHUNK` bytes and a line is never
held beyond :func:`max_line_bytes`; a longer line is counted while it streams past and quarantined
as ``too_long`` with a bounded prefix, so a 4 GiB line in a 128 KB ``.zst`` costs a few MB.
"""

from __future__ import annotations

import bz2
import collections
import fnmatch
import gzip
import json
import lzma
import math
import os
import re
import unicodedata
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

from .schema import RAW_PREVIEW_BYTES

SUPPORTED_SUFFIXES = (
    ".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".jsonl.zstd", ".jsonl.bz2", ".jsonl.xz", ".parquet", ".json",
)
# Compressions that are recognised but not read: the file becomes one ``unsupported_compression`` row.
UNSUPPORTED_SUFFIXES = (".zip", ".7z", ".rar", ".tar", ".tgz", ".lz4", ".br", ".snappy", ".lzo", ".z")
# Magic bytes of compressed streams, used for files whose name says plain JSON Lines.
MAGIC = (
    (b"\x1f\x8b", "jsonl.gz"), (b"\x28\xb5\x2f\xfd", "jsonl.zst"), (b"BZh", "jsonl.bz2"),
    (b"\xfd7zXZ\x00", "jsonl.xz"), (b"PK\x03\x04", "zip"),
)
BOM = b"\xef\xbb\xbf"
READ_CHUNK = 1 << 20  # decoded bytes per read
ZSTD_FEED = 256  # compressed bytes per zstd call: <= 256 / 4 * 128 KiB = 8 MiB of output even for a bomb
LINE_HEADROOM = 1 << 20  # room for the fields other than text on one line
MAX_JSON_DEPTH = 128  # deeper records are quarantined as too_deep
STAGE_MANIFEST = "_manifest.json"


@dataclass(frozen=True)
class RawRecord:
    """One input record: parsed ``value`` or a quarantine ``reason`` + ``detail`` + ``raw`` preview."""

    record_index: int
    value: dict | None
    reason: str | None = None
    detail: str = ""
    raw: str = ""


def safe_text(text: str) -> str:
    """``text`` with lone surrogates written as ``\\udXXX`` escapes, so it always encodes as UTF-8."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _preview(raw: bytes | str) -> str:
    """At most :data:`RAW_PREVIEW_BYTES` of a record, always valid UTF-8 (for the quarantine ``raw``)."""
    if isinstance(raw, bytes):
        raw = raw[:RAW_PREVIEW_BYTES].decode("utf-8", errors="replace")
    return safe_text(raw[:RAW_PREVIEW_BYTES])


def max_line_bytes(max_doc_bytes: int) -> int:
    """The longest JSON line read: a text of ``max_doc_bytes`` can take 6 bytes per byte when escaped
    (``\\u0001``), plus :data:`LINE_HEADROOM` for the other fields. Longer lines are ``too_long``."""
    return 6 * max_doc_bytes + LINE_HEADROOM


# ------------------------------------------------------------------------------------- formats
def file_format(path: str) -> str:
    """The format from the file name (case-insensitive): ``parquet``, ``jsonl``, ``jsonl.gz``,
    ``jsonl.zst``, ``jsonl.bz2``, ``jsonl.xz``, or ``unsupported:<suffix>`` for a known but unread
    compression (zip, 7z, lz4, ...)."""
    name = path.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".gz"):
        return "jsonl.gz"
    if name.endswith(".zst") or name.endswith(".zstd"):
        return "jsonl.zst"
    if name.endswith(".bz2"):
        return "jsonl.bz2"
    if name.endswith(".xz") or name.endswith(".lzma"):
        return "jsonl.xz"
    for suffix in UNSUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return "unsupported:" + suffix
    return "jsonl"


def sniff_format(path: str, fmt: str) -> str:
    """For a file named as plain JSON Lines, the compression its first bytes show (else ``fmt``).

    A JSON line starts with ``{``, whitespace or a BOM, so a compression magic is never valid JSON.
    """
    if fmt != "jsonl":
        return fmt
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return fmt  # the reader reports it
    for magic, sniffed in MAGIC:
        if head.startswith(magic):
            return sniffed if sniffed != "zip" else "unsupported:.zip"
    return fmt


class TruncatedStream(EOFError):
    """A compressed stream ended before its end-of-frame marker."""


def _zstd_chunks(path: str) -> Iterator[bytes]:
    """Decoded chunks of a (multi-frame) zstd file, each about :data:`READ_CHUNK` bytes (<= 9 MiB).

    ``zstandard``'s stream_reader returns EOF silently on a truncated frame, so frames are fed to a
    ``decompressobj`` by hand and its ``eof`` flag is checked at the end (raises TruncatedStream).
    A ``decompressobj`` call returns all the output of its input, so input goes in slices of
    :data:`ZSTD_FEED` bytes to bound what one call can produce from a decompression bomb.
    """
    import zstandard

    decompressor = zstandard.ZstdDecompressor()
    dobj = decompressor.decompressobj()
    frame_open = False
    out: list[bytes] = []
    size = 0
    with open(path, "rb") as fh:
        while True:
            block = fh.read(READ_CHUNK)
            if not block:
                break
            for start in range(0, len(block), ZSTD_FEED):
                piece = block[start : start + ZSTD_FEED]
                while piece:
                    frame_open = True
                    try:
                        data = dobj.decompress(piece)
                    except zstandard.ZstdError:
                        if out:
                            yield b"".join(out)
                        raise
                    piece = b""
                    if data:
                        out.append(data)
                        size += len(data)
                    if dobj.eof:
                        piece = dobj.unused_data
                        dobj = decompressor.decompressobj()
                        frame_open = bool(piece)
                if size >= READ_CHUNK:
                    yield b"".join(out)
                    out, size = [], 0
    if out:
        yield b"".join(out)
    if frame_open:
        raise TruncatedStream("zstd stream ended before the end of its frame")


_OPENERS = {"jsonl": open, "jsonl.gz": gzip.open, "jsonl.bz2": bz2.open, "jsonl.xz": lzma.open}


def _file_chunks(path: str, fmt: str) -> Iterator[bytes]:
    """Decoded chunks of a plain/gzip/bz2/xz file, about :data:`READ_CHUNK` bytes each.

    ``read1`` decodes at most the size asked for (bounded even for a bomb) and returns what it
    has, so the data decoded before a truncation is yielded before the error is raised.
    """
    out: list[bytes] = []
    size = 0
    with _OPENERS[fmt](path, "rb") as fh:
        try:
            while True:
                chunk = fh.read1(READ_CHUNK)
                if not chunk:
                    break
                out.append(chunk)
                size += len(chunk)
                if size >= READ_CHUNK:
                    yield b"".join(out)
                    out, size = [], 0
        except _STREAM_ERRORS:
            if out:
                yield b"".join(out)
            raise
    if out:
        yield b"".join(out)


def _decoded_chunks(path: str, fmt: str) -> Iterator[bytes]:
    """The decompressed bytes of a JSON Lines file in chunks of about :data:`READ_CHUNK` (zstd: <= 9 MiB)."""
    if fmt == "jsonl.zst":
        yield from _zstd_chunks(path)
    else:
        yield from _file_chunks(path, fmt)


def _stream_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [EOFError, OSError, zlib.error, lzma.LZMAError]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover - core dependency
        pass
    return tuple(errors)


_STREAM_ERRORS = _stream_errors()


@dataclass(frozen=True)
class _StreamFailure:
    """Stands in the chunk stream for the exception that ended it."""

    error: BaseException


def _guarded_chunks(path: str, fmt: str) -> Iterator[bytes | _StreamFailure]:
    """:func:`_decoded_chunks`, with a stream error turned into a final :class:`_StreamFailure`."""
    try:
        yield from _decoded_chunks(path, fmt)
    except _STREAM_ERRORS as exc:
        # gzip: EOFError on truncation, BadGzipFile (an OSError) on garbage; bz2: OSError/EOFError;
        # xz: LZMAError/EOFError; zstd: ZstdError / TruncatedStream; open(): OSError.
        yield _StreamFailure(exc)


class Line(NamedTuple):
    """One physical line: ``data`` without its newline (only a bounded prefix when the line is
    longer than the limit), its full length ``n_bytes``, whether a newline ended it, and the stream
    error that cut it off (set on the last item of a failed stream only)."""

    data: bytes
    n_bytes: int
    ended: bool
    error: BaseException | None = None


def split_lines(chunks: Iterable[bytes | _StreamFailure], limit: int) -> Iterator[Line]:
    """The lines of a chunk stream, holding at most ``limit`` bytes of one line.

    A longer line keeps only a :data:`RAW_PREVIEW_BYTES` prefix and is counted as it streams past,
    so memory is O(chunk + limit) whatever the line length.
    """
    buffer = bytearray()
    prefix = b""
    skipped = -1  # >= 0 while inside an over-long line: its byte count so far
    for chunk in chunks:
        if isinstance(chunk, _StreamFailure):
            data = prefix if skipped >= 0 else bytes(buffer[:RAW_PREVIEW_BYTES])
            yield Line(data, skipped if skipped >= 0 else len(buffer), False, chunk.error)
            return
        pieces = chunk.split(b"\n")
        for i, piece in enumerate(pieces):
            ended = i < len(pieces) - 1
            whole = None  # a line that lies entirely inside this chunk (no copy needed)
            if skipped >= 0:
                skipped += len(piece)
                if len(prefix) < RAW_PREVIEW_BYTES:
                    prefix += piece[: RAW_PREVIEW_BYTES - len(prefix)]
            elif buffer or not ended:
                buffer += piece
                if len(buffer) > limit:
                    prefix, skipped = bytes(buffer[:RAW_PREVIEW_BYTES]), len(buffer)
                    buffer = bytearray()
            else:
                whole = piece
            if not ended:
                continue
            if skipped >= 0:
                yield Line(prefix, skipped, True)
                skipped = -1
            elif whole is not None:
                yield Line(whole if len(whole) <= limit else whole[:RAW_PREVIEW_BYTES], len(whole), True)
            else:
                yield Line(bytes(buffer), len(buffer), True)
                buffer = bytearray()
    if skipped >= 0:
        yield Line(prefix, skipped, False)
    elif buffer:
        yield Line(bytes(buffer), len(buffer), False)


# ----------------------------------------------------------------------------------- JSON lines
class NonStandardNumber(ValueError):
    """``NaN``, ``Infinity`` or ``-Infinity`` in a JSON line (Python accepts them; JSON does not)."""


def _reject_constant(name: str):
    raise NonStandardNumber(name)


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _depth_and_surrogate(value: Any, look_for_surrogates: bool) -> tuple[int, bool]:
    """Nesting depth of a parsed JSON value and whether any key or string holds a lone surrogate.

    Iterative, so a deep value cannot overflow the stack; stops descending past MAX_JSON_DEPTH.
    """
    depth = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, str):
            if look_for_surrogates and _SURROGATE.search(item):
                return depth, True
            continue
        if not isinstance(item, (dict, list)):
            continue
        depth = max(depth, level)
        if depth > MAX_JSON_DEPTH:
            return depth, False
        if isinstance(item, dict):
            stack.extend((key, level) for key in item)
            stack.extend((child, level + 1) for child in item.values())
        else:
            stack.extend((child, level + 1) for child in item)
    return depth, False


def parse_json_line(index: int, line: bytes) -> RawRecord:
    """One JSON object, or a quarantine record saying why the line is not a usable one.

    Policy: a line is JSON only if a strict JSON parser would accept it and every string is valid
    Unicode, so ``NaN``/``Infinity`` (``invalid_json``, "non-standard number") and lone surrogate
    escapes such as ``"\\ud800"`` (``invalid_unicode``) are quarantined rather than converted;
    nesting deeper than :data:`MAX_JSON_DEPTH` is ``too_deep``.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RawRecord(index, None, "invalid_utf8", f"byte {exc.start}: {exc.reason}", _preview(line))
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        return RawRecord(index, None, "invalid_json", f"{exc.msg} at column {exc.colno}", _preview(text))
    except NonStandardNumber as exc:
        detail = f"non-standard number {exc} (JSON has no NaN or Infinity); write null or a string"
        return RawRecord(index, None, "invalid_json", detail, _preview(text))
    except RecursionError:
        return RawRecord(index, None, "too_deep", "nested deeper than the JSON parser's recursion limit", _preview(text))
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        return RawRecord(index, None, "invalid_json", f"unusable value: {exc}", _preview(text))
    if not isinstance(value, dict):
        return RawRecord(index, None, "invalid_json", f"a JSON {type(value).__name__}, not an object", _preview(text))
    look_for_surrogates = bool(_SURROGATE_ESCAPE.search(text))
    if not look_for_surrogates and text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return RawRecord(index, value)  # fast path: too few brackets to nest too deep, no surrogate escape
    depth, surrogate = _depth_and_surrogate(value, look_for_surrogates)
    if surrogate:
        detail = "a string holds a lone surrogate escape (e.g. \\ud800), which is not Unicode text"
        return RawRecord(index, None, "invalid_unicode", detail, _preview(text))
    if depth > MAX_JSON_DEPTH:
        return RawRecord(index, None, "too_deep", f"nested deeper than {MAX_JSON_DEPTH} levels", _preview(text))
    return RawRecord(index, value)


def _too_long(index: int, line: Line, limit: int) -> RawRecord:
    detail = (f"line of {line.n_bytes} bytes > {limit} bytes (6 x ingest.max_doc_bytes + 1 MiB); "
              "skipped while reading")
    return RawRecord(index, None, "too_long", detail, _preview(line.data))


def _read_jsonl(path: str, fmt: str, max_doc_bytes: int) -> Iterator[RawRecord]:
    limit = max_line_bytes(max_doc_bytes)
    index = 0
    first = True
    for line in split_lines(_guarded_chunks(path, fmt), limit):
        data = line.data
        if first and data.startswith(BOM):
            data = data[len(BOM):]
        first = False
        if line.error is not None:
            exc = line.error
            cut = isinstance(exc, EOFError) or index > 0 or line.n_bytes > 0  # EOFError: the stream ends early
            kind = "truncated_file" if cut else "unreadable_file"
            yield RawRecord(index, None, kind, f"{type(exc).__name__}: {exc}", _preview(data))
            return
        if line.n_bytes > limit:
            yield _too_long(index, line, limit)
        elif not data.strip():
            continue  # blank lines are not records
        elif line.ended:
            yield parse_json_line(index, data.rstrip(b"\r"))
        else:
            yield _last_line(index, data.rstrip(b"\r"))
        index += 1


def _last_line(index: int, data: bytes) -> RawRecord:
    """A final line without newline: keep it if it parses, else report the file as truncated."""
    record = parse_json_line(index, data)
    if record.reason == "invalid_json":
        return RawRecord(index, None, "truncated_file", "the last line is cut off: " + record.detail, record.raw)
    return record


# -------------------------------------------------------------------------------------- parquet
def _rows(batch) -> Iterator[dict | UnicodeDecodeError]:
    """The rows of a record batch; a row whose strings are not UTF-8 becomes its error, alone."""
    try:
        yield from batch.to_pylist()
        return
    except UnicodeDecodeError:
        pass
    for i in range(batch.num_rows):
        try:
            yield batch.slice(i, 1).to_pylist()[0]
        except UnicodeDecodeError as exc:
            yield exc


def _read_parquet(path: str, batch_size: int = 1024) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for corrupt footers
        yield RawRecord(0, None, "unreadable_file", f"{type(exc).__name__}: {exc}", "")
        return
    index = 0
    try:
        for batch in parquet.iter_batches(batch_size=batch_size):
            for row in _rows(batch):
                if isinstance(row, UnicodeDecodeError):
                    yield RawRecord(index, None, "invalid_utf8", f"a string column: byte {row.start}: {row.reason}", "")
                else:
                    yield RawRecord(index, row)
                index += 1
    except Exception as exc:  # a corrupt row group: keep what was read, report the rest once
        yield RawRecord(index, None, "truncated_file", f"{type(exc).__name__}: {exc}", "")


# ------------------------------------------------------------------------------------ read_file
def read_file(path: str, *, max_doc_bytes: int = 10_000_000) -> Iterator[RawRecord]:
    """Stream the records of one input file; bad content becomes quarantine records, never an exception.

    ``max_doc_bytes`` bounds the JSON lines held in memory (see :func:`max_line_bytes`).
    """
    if os.path.isdir(path):
        detail = "a directory, not a file; glob the files inside it (e.g. 'name.parquet/*.parquet')"
        return iter([RawRecord(0, None, "unreadable_file", detail, "")])
    fmt = sniff_format(path, file_format(path))
    if fmt.startswith("unsupported:"):
        detail = (f"{fmt.split(':', 1)[1]} files are not read; decompress to .jsonl, .jsonl.gz, .jsonl.zst, "
                  ".jsonl.bz2 or .jsonl.xz (or write parquet)")
        return iter([RawRecord(0, None, "unsupported_compression", detail, "")])
    if fmt == "parquet":
        return _read_parquet(path)
    return _read_jsonl(path, fmt, max_doc_bytes)


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
    ``default_id`` (see :func:`default_doc_id`), so ids are deterministic either way.
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


def default_doc_id(source: str, id_key: str, record_index: int) -> str:
    """``<source>/<id_key>:<record index>``; ``id_key`` is the file's path relative to the common
    root of the source's globs (see :func:`glob_root`), so ``a/part.jsonl`` and ``b/part.jsonl``
    get different ids, and moving the whole tree elsewhere keeps them."""
    return f"{source}/{id_key}:{record_index}"


def strict_json(value: Any, default=None) -> str:
    """``value`` as strict JSON (sorted keys). Non-finite floats (a parquet NaN, a JSON ``1e999``,
    which Python reads as inf) become ``null``: JSON has no such numbers and strict readers reject
    them. Lone surrogates are written as escapes."""
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False, default=default)
    except ValueError:
        return json.dumps(_finite(value), sort_keys=True, ensure_ascii=False, allow_nan=False, default=default)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------- globs
_MAGIC_CHARS = re.compile(r"[*?\[]")


def split_glob(pattern: str) -> tuple[str, list[str]]:
    """``(root, parts)``: the absolute folder before the first wildcard, and the components after it.

    A pattern without wildcards is ``(its folder, [its name])``. A trailing ``**`` means every file
    below (``**/*``).
    """
    path = os.path.abspath(os.path.expanduser(pattern))
    components = path.split(os.sep)
    for i, component in enumerate(components):
        if _MAGIC_CHARS.search(component):
            root, parts = os.sep.join(components[:i]) or os.sep, components[i:]
            break
    else:
        root, parts = os.path.dirname(path), [os.path.basename(path)]
    if parts[-1] == "**":
        parts = parts + ["*"]
    return root, parts


def glob_root(patterns: Iterable[str]) -> str:
    """The common folder of the patterns' roots: default doc ids are file paths relative to it."""
    return os.path.commonpath([split_glob(p)[0] for p in patterns])


def is_stage_folder(folder: str) -> bool:
    """Whether ``folder`` holds a mixweave stage manifest (an artifact a run wrote)."""
    path = os.path.join(folder, STAGE_MANIFEST)
    try:
        if not os.path.isfile(path) or os.path.getsize(path) > (64 << 20):
            return False
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(manifest, dict) and "stage" in manifest and "fingerprint" in manifest


def _under(real: str, folders: tuple[str, ...]) -> bool:
    return any(real == f or real.startswith(f.rstrip(os.sep) + os.sep) for f in folders)


def _hidden(name: str, part: str) -> bool:
    """Like ``glob``: a wildcard does not match a name starting with '.' unless the pattern does."""
    return name.startswith(".") and not part.startswith(".")


@dataclass(frozen=True)
class GlobHit:
    """A path a pattern matched: ``excluded`` when it lies in an excluded or stage folder;
    ``error`` when a folder on the way could not be listed (``path`` is then that folder)."""

    path: str
    excluded: bool = False
    error: str | None = None


def expand_glob(pattern: str, exclude: Iterable[str] = ()) -> list[GlobHit]:
    """The files ``pattern`` matches (``*``, ``?``, ``[..]``, ``**`` as in :func:`glob.glob`).

    Unlike ``glob.glob`` it follows directory symlinks but never loops: folders are walked breadth
    first and each (real folder, remaining pattern) is expanded once, so a symlink cycle under
    ``**`` costs one visit, and each real file is found once (deduplicated by resolved path, keeping
    its shortest path). Cost: one listing per real folder and pattern component.
    A dangling symlink is returned (reading it gives ``unreadable_file``); so is a folder whose name
    matches the last component (e.g. Spark's ``x.parquet/``); other folders are not.
    Files the wildcards reach under an ``exclude`` folder (resolved) or under a folder holding a
    mixweave stage manifest (a run's output) are returned with ``excluded=True``. What the pattern
    names before its first wildcard is always read: an excluded folder that holds the pattern's
    root, or a stage folder named literally, does not exclude it (the user asked for it by name).
    """
    root, parts = split_glob(pattern)
    real_root = os.path.realpath(root)
    excluded_roots = tuple(r for r in map(os.path.realpath, exclude) if not _under(real_root, (r,)))
    hits: list[GlobHit] = []
    seen: set[tuple[str, int, bool]] = set()
    queue = collections.deque([(root, 0, False)])  # breadth first: a folder is first reached by its shortest path
    while queue:
        folder, k, excluded = queue.popleft()
        real = os.path.realpath(folder)
        if folder != root:
            excluded = excluded or _under(real, excluded_roots) or is_stage_folder(folder)
        if (real, k, excluded) in seen:
            continue  # already expanded through another path (a symlink, or '**' matching zero folders)
        seen.add((real, k, excluded))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue  # nothing there (a path component that is a file matches no file below it)
        except OSError as exc:
            hits.append(GlobHit(folder, excluded, f"cannot list folder: {type(exc).__name__}: {exc.strerror}"))
            continue
        part, last = parts[k], k == len(parts) - 1
        children = []
        if part == "**":
            children.append((folder, k + 1))
            children.extend((e.path, k) for e in entries if not _hidden(e.name, part) and _is_dir(e))
        else:
            for entry in entries:
                if _hidden(entry.name, part) or not fnmatch.fnmatchcase(entry.name, part):
                    continue
                if not last:
                    if _is_dir(entry):
                        children.append((entry.path, k + 1))
                elif not _is_dir(entry) or entry.name.lower().endswith(SUPPORTED_SUFFIXES):
                    hit_excluded = excluded or _under(os.path.realpath(entry.path), excluded_roots)
                    hits.append(GlobHit(entry.path, hit_excluded))
        queue.extend((path, kk, excluded) for path, kk in children)
    return _dedupe(hits)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks; False for a dangling or looping link
    except OSError:
        return False


def _dedupe(hits: list[GlobHit]) -> list[GlobHit]:
    """One hit per resolved path (the shortest path, then the first in sorted order), sorted by path."""
    by_real: dict[str, GlobHit] = {}
    for hit in sorted(hits, key=lambda h: (h.path.count(os.sep), h.path)):
        by_real.setdefault(os.path.realpath(hit.path), hit)
    return sorted(by_real.values(), key=lambda h: h.path)


def id_key(path: str, root: str) -> str:
    """The file's path relative to ``root`` with '/' separators (see :func:`default_doc_id`)."""
    return Path(os.path.relpath(path, root)).as_posix()
