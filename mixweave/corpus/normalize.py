"""Text normalisation shared by every extractor.

Pure functions over ``str``: decoding, Unicode NFC, HTML stripping, whitespace cleanup,
splitting long documents at section/paragraph boundaries, grouping short entries, hashing.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from html.parser import HTMLParser
from typing import Iterable, Iterator, Sequence

__all__ = [
    "decode_bytes",
    "normalize_text",
    "strip_html",
    "split_document",
    "group_entries",
    "merge_short_units",
    "text_sha256",
    "utf8_len",
    "slugify",
]

# ANSI terminal colour/cursor sequences (fortunes-zh has them), then C0/C1 control characters
# except tab and newline (the form feed is mapped to a newline first).
_ANSI_ESCAPE_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ufeff]")
_TRAILING_WS_RE = re.compile(r"[ \t\u00a0]+$", re.MULTILINE)


def decode_bytes(data: bytes, encoding: str = "utf-8") -> str:
    """Decode bytes, replacing undecodable sequences (U+FFFD) instead of failing."""
    return data.decode(encoding, errors="replace")


def utf8_len(text: str) -> int:
    """Length of ``text`` in UTF-8 bytes."""
    return len(text.encode("utf-8"))


def text_sha256(text: str) -> str:
    """Hex sha256 of the UTF-8 encoding of ``text`` (the exact-dedup key)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def slugify(value: str, max_len: int = 60) -> str:
    """A filesystem/id-safe slug: ASCII letters, digits, '-', '_' and '.'."""
    norm = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", norm).strip("-.").lower()
    return slug[:max_len] or "x"


def normalize_text(text: str, *, max_blank_lines: int = 1) -> str:
    """NFC-normalise and clean whitespace; keep indentation and line structure.

    Converts CR/CRLF/form feed to LF, drops ANSI colour sequences and control characters, strips
    trailing spaces, collapses runs of blank lines to ``max_blank_lines`` and strips
    leading/trailing blank lines.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    text = unicodedata.normalize("NFC", text)
    text = _ANSI_ESCAPE_RE.sub("", text)
    text = _CONTROL_RE.sub("", text)
    text = _TRAILING_WS_RE.sub("", text)
    text = re.sub(r"\n{%d,}" % (max_blank_lines + 2), "\n" * (max_blank_lines + 1), text)
    return text.strip("\n").rstrip()


# --------------------------------------------------------------------------------------------
# HTML

_BLOCK_TAGS = frozenset(
    "address article aside blockquote body br caption dd div dl dt fieldset figcaption figure "
    "footer form h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section table tbody td tfoot "
    "th thead title tr ul".split()
)
_SKIP_TAGS = frozenset({"script", "style", "head", "noscript", "template", "svg"})
_VOID_TAGS = frozenset("area base br col embed hr img input link meta source track wbr".split())
# navigation chrome of generated manuals (DocBook/Publican navheader, navfooter, ...)
_NAV_CLASS_RE = re.compile(r"\b(?:\w*nav\w*|breadcrumbs?|sidebar|banner|headerlink)\b")


class _TextExtractor(HTMLParser):
    """Collects visible text; block elements become line breaks, <pre> keeps its layout."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0
        self._pre_depth = 0
        self._nav_tag: str | None = None    # tag of the navigation element being skipped
        self._nav_nesting = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if self._nav_tag is not None:
            if tag == self._nav_tag:
                self._nav_nesting += 1
            return
        attributes = dict(attrs)
        marks = f"{attributes.get('class') or ''} {attributes.get('id') or ''}"
        if tag not in _VOID_TAGS and (tag == "nav" or _NAV_CLASS_RE.search(marks)):
            self._nav_tag, self._nav_nesting = tag, 1
            return
        if tag in _SKIP_TAGS:
            self._skip_depth += 1
        elif tag == "pre":
            self._pre_depth += 1
            self.parts.append("\n\n")
        elif tag == "li":
            self.parts.append("\n* ")
        elif tag in ("td", "th"):
            self.parts.append(" | ")
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n" if tag not in ("br", "tr", "dd", "dt") else "\n")

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag in ("br", "hr") and self._nav_tag is None and not self._skip_depth:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if self._nav_tag is not None:
            if tag == self._nav_tag:
                self._nav_nesting -= 1
                if self._nav_nesting == 0:
                    self._nav_tag = None
            return
        if tag in _SKIP_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)
            self.parts.append("\n\n")
        elif tag in _BLOCK_TAGS and tag != "li":   # the next <li> starts its own line
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._skip_depth or self._nav_tag is not None:
            return
        if self._pre_depth:
            self.parts.append(data)
            return
        data = re.sub(r"\s+", " ", data)
        if not self.parts or self.parts[-1].endswith("\n"):
            data = data.lstrip()
        if data:
            self.parts.append(data)


def strip_html(markup: str) -> str:
    """Visible text of an HTML page: tags, scripts and styles removed, entities decoded."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    text = "".join(parser.parts)
    return re.sub(r"[ \t]+\n", "\n", text)


# --------------------------------------------------------------------------------------------
# splitting and grouping


def _hard_split(text: str, max_bytes: int) -> list[str]:
    """Split at UTF-8-safe character positions (last resort for a single huge line)."""
    pieces: list[str] = []
    data = text.encode("utf-8")
    start = 0
    while start < len(data):
        end = min(start + max_bytes, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # don't cut inside a character
            end -= 1
        pieces.append(data[start:end].decode("utf-8"))
        start = end
    return pieces


def _units(text: str, separators: Sequence[str]) -> list[str]:
    """Split keeping separators attached to the end of each unit, so joining is lossless."""
    sep = separators[0]
    parts = text.split(sep)
    units = [p + sep for p in parts[:-1]] + [parts[-1]]
    return [u for u in units if u]


def _pack(units: list[str], max_bytes: int, separators: Sequence[str]) -> list[str]:
    """Greedily pack units into chunks <= max_bytes, aiming for balanced chunk sizes."""
    sizes = [utf8_len(u) for u in units]
    total = sum(sizes)
    n_chunks = max(1, -(-total // max_bytes))
    target = total / n_chunks
    chunks: list[str] = []
    current: list[str] = []
    current_size = 0
    for unit, size in zip(units, sizes):
        if size > max_bytes:
            if current:
                chunks.append("".join(current))
                current, current_size = [], 0
            if len(separators) > 1:
                chunks.extend(_pack(_units(unit, separators[1:]), max_bytes, separators[1:]))
            else:
                chunks.extend(_hard_split(unit, max_bytes))
            continue
        if current and (current_size + size > max_bytes or current_size >= target):
            chunks.append("".join(current))
            current, current_size = [], 0
        current.append(unit)
        current_size += size
    if current:
        chunks.append("".join(current))
    return _merge_adjacent(chunks, max_bytes)


def _merge_adjacent(chunks: list[str], max_bytes: int) -> list[str]:
    """Join neighbouring chunks while the result still fits (removes tiny leftover pieces)."""
    merged: list[str] = []
    for chunk in chunks:
        if merged and utf8_len(merged[-1]) + utf8_len(chunk) <= max_bytes:
            merged[-1] += chunk
        else:
            merged.append(chunk)
    return merged


def split_document(text: str, max_bytes: int = 50_000,
                   section_pattern: re.Pattern[str] | str | None = None) -> list[str]:
    """Split ``text`` into parts of at most ``max_bytes`` UTF-8 bytes.

    Breaks preferably where ``section_pattern`` (a multiline regex matching the start of a
    section heading) matches, then at blank lines (paragraphs), then at line ends, and only as a
    last resort inside a line. Concatenating the parts gives back ``text`` exactly.
    """
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    if utf8_len(text) <= max_bytes:
        return [text]
    separators = ["\n\n", "\n"]
    if section_pattern is not None:
        pattern = re.compile(section_pattern, re.MULTILINE) if isinstance(section_pattern, str) \
            else section_pattern
        starts = sorted({m.start() for m in pattern.finditer(text)} - {0})
        if starts:
            bounds = [0, *starts, len(text)]
            sections = [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
            return [c for c in _pack(sections, max_bytes, separators) if c]
    return [c for c in _pack(_units(text, separators), max_bytes, separators) if c]


def group_entries(entries: Iterable[str], max_bytes: int = 4_000,
                  joiner: str = "\n\n") -> Iterator[str]:
    """Concatenate consecutive short entries into groups of at most ~``max_bytes`` each.

    An entry larger than ``max_bytes`` forms a group on its own (it is split later if needed).
    """
    group: list[str] = []
    size = 0
    for entry in entries:
        entry_size = utf8_len(entry) + len(joiner)
        if group and size + entry_size > max_bytes:
            yield joiner.join(group)
            group, size = [], 0
        group.append(entry)
        size += entry_size
    if group:
        yield joiner.join(group)


def merge_short_units(units: Sequence[tuple[str, str]], min_chars: int = 200,
                      joiner: str = "\n\n") -> list[tuple[str, str]]:
    """Merge each unit shorter than ``min_chars`` into the following one (or the last into the
    previous); ``units`` are ``(key, text)`` pairs and a merged unit keeps the first key."""
    merged: list[tuple[str, str]] = []
    pending_key: str | None = None
    pending: list[str] = []
    for key, text in units:
        if pending_key is None:
            pending_key = key
        pending.append(text)
        if sum(len(t) for t in pending) >= min_chars:
            merged.append((pending_key, joiner.join(pending)))
            pending_key, pending = None, []
    if pending:
        if merged:
            key, text = merged.pop()
            merged.append((key, joiner.join([text, *pending])))
        else:
            merged.append((pending_key or "0", joiner.join(pending)))
    return merged
