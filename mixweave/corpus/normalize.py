"""Text normalisation shared by every extractor.

Pure functions over ``str``: decoding, Unicode NFC, HTML and roff stripping, whitespace cleanup,
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
    "strip_roff",
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
# roff (man pages)

_ROFF_SPECIAL = {
    "aq": "'", "dq": '"', "em": "\u2014", "en": "\u2013", "bu": "\u2022", "co": "\u00a9",
    "rg": "\u00ae", "tm": "\u2122", "lq": "\u201c", "rq": "\u201d", "oq": "\u2018",
    "cq": "\u2019", "ga": "`", "ti": "~", "ha": "^", "rs": "\\", "mu": "\u00d7", "+-": "\u00b1",
    "<=": "\u2264", ">=": "\u2265", "!=": "\u2260", "->": "\u2192", "<-": "\u2190",
    "hy": "-", "mi": "-", "pl": "+", "eq": "=", "sl": "/", "ba": "|", "or": "|", "br": "|",
    "de": "\u00b0", "ss": "\u00df", "a:": "\u00e4", "o:": "\u00f6", "u:": "\u00fc",
    "A:": "\u00c4", "O:": "\u00d6", "U:": "\u00dc", "e'": "\u00e9", "e`": "\u00e8",
    "pi": "\u03c0", "*m": "\u00b5", "sc": "\u00a7", "ps": "\u00b6", "fo": "\u00ab", "fc": "\u00bb",
    "Fo": "\u00ab", "Fc": "\u00bb", "dg": "\u2020", "ct": "\u00a2", "Eu": "\u20ac", "eu": "\u20ac",
    "at": "@", "sh": "#", "Do": "$", "lB": "[", "rB": "]", "lC": "{", "rC": "}", "la": "\u27e8",
    "ra": "\u27e9", "ua": "\u2191", "da": "\u2193", "fm": "\u2032", "sd": "\u2033",
}
_ROFF_STRINGS = {"lq": "\u201c", "rq": "\u201d", "R": "\u00ae", "Tm": "\u2122", "S": "", "''": "\u201d"}

_ESCAPE_RE = re.compile(
    r"""\\(?:
        \((?P<two>..)            # \(xx special character
      | \[(?P<bracket>[^\]]*)\]  # \[name] special character
      | \*(?:\((?P<str2>..)|\[(?P<strb>[^\]]*)\]|(?P<str1>.))   # string register
      | [fF](?:\(..|\[[^\]]*\]|.)   # font change
      | s[+-]?(?:\(\d\d|\[\d*\]|\d)  # size change
      | [nk](?:\(..|\[[^\]]*\]|.)   # number register / mark
      | [hvwlLxbD]'[^']*'          # motions, width, lines: drop with argument
      | [gmMYV](?:\(..|\[[^\]]*\]|.)
      | (?P<char>.)                 # one-character escape
    )""",
    re.VERBOSE,
)
_ONE_CHAR_ESCAPES = {"-": "-", "e": "\\", "\\": "\\", "~": " ", " ": " ", "0": " ", "t": "\t",
                     "'": "\u00b4", "`": "`", ".": ".", '"': ""}


def _roff_escape(match: re.Match) -> str:
    if match.group("two") is not None:
        return _ROFF_SPECIAL.get(match.group("two"), "")
    if match.group("bracket") is not None:
        name = match.group("bracket")
        if name.startswith("u") and re.fullmatch(r"u[0-9A-Fa-f]{4,6}", name):
            return chr(int(name[1:], 16))
        return _ROFF_SPECIAL.get(name, "")
    for group in ("str2", "strb", "str1"):
        if match.group(group) is not None:
            return _ROFF_STRINGS.get(match.group(group), "")
    char = match.group("char")
    if char is not None:
        return _ONE_CHAR_ESCAPES.get(char, "")
    return ""


def _roff_inline(text: str) -> str:
    """Resolve roff escapes in a line of text."""
    if "\\" not in text:
        return text
    return _ESCAPE_RE.sub(_roff_escape, text)


def _roff_args(rest: str) -> list[str]:
    """Split a macro argument string, honouring roff double quotes ("" is a literal quote)."""
    args: list[str] = []
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t":
            i += 1
        if i >= n:
            break
        if rest[i] == '"':
            i += 1
            buf = []
            while i < n:
                if rest[i] == '"':
                    if i + 1 < n and rest[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(rest[i])
                i += 1
            args.append("".join(buf))
        else:
            j = i
            while j < n and rest[j] not in " \t":
                j += 1
            args.append(rest[i:j])
            i = j
    return args


_FONT_MACROS = {"B", "I", "SM", "SB", "CW", "R"}
_ALT_MACROS = {"BR", "RB", "BI", "IB", "IR", "RI"}
_BREAK_MACROS = {"PP", "LP", "P", "sp", "HP", "RS", "RE", "IP", "TP", "TQ", "EX", "EE", "SY",
                 "YS", "in", "ti", "ne", "bp", "Sh", "Pp", "Bd", "Ed", "Bl", "El"}


def _render_table(lines: list[str], tab: str) -> list[str]:
    """Rows of a tbl(1) table as ``cell | cell`` lines; ``T{ ... T}`` text blocks are joined."""
    text = "\n".join(lines)
    text = re.sub(r"T\{\n?(.*?)\n?T\}", lambda m: " ".join(m.group(1).split("\n")), text,
                  flags=re.DOTALL)
    rows = []
    for row in text.split("\n"):
        if row.strip() in ("_", "=", ""):
            continue
        cells = [_roff_inline(cell).strip() for cell in row.split(tab)]
        rows.append(" | ".join(cells))
    return rows


def strip_roff(source: str) -> str:
    """Plain text of a roff/man(7) page without running ``man``.

    Headings (.SH/.SS) become their own lines, font and alternating-font macros keep their words,
    filled paragraphs are joined into one line, no-fill blocks (.nf/.EX, tables) keep their lines,
    comments, macro definitions and layout requests disappear, and escapes are resolved.
    """
    lines = source.replace("\r\n", "\n").split("\n")
    out: list[str] = []           # finished lines
    para: list[str] = []          # words of the current filled paragraph
    fill = True
    in_def = False
    in_table = 0                  # 0: no table; 1: reading options/format; 2: data
    table_lines: list[str] = []
    table_tab = "\t"
    title = ""

    def flush(blank: bool = True) -> None:
        if para:
            out.append(" ".join(p for p in para if p).strip())
            para.clear()
        if blank and out and out[-1] != "":
            out.append("")

    tag_next = False              # after .TP the next text line is the item's tag

    def emit_text(text: str) -> None:
        nonlocal tag_next
        if tag_next:
            flush(blank=False)
            out.append(text.strip())
            tag_next = False
        elif fill:
            para.append(text.strip())
        else:
            out.append(text.rstrip())

    # join escaped newlines
    joined: list[str] = []
    buf = ""
    for line in lines:
        if line.endswith("\\") and not line.endswith("\\\\"):
            buf += line[:-1]
            continue
        joined.append(buf + line)
        buf = ""
    if buf:
        joined.append(buf)

    for raw in joined:
        line = raw
        if in_def:
            if line.startswith(".."):
                in_def = False
            continue
        if line.startswith((".\\\"", "'\\\"", "\\\"", ".\\#", "\\#")) or line.strip() == ".":
            continue
        if in_table:
            if line.startswith((".TE", "'TE")):
                in_table = 0
                flush()
                out.extend(_render_table(table_lines, table_tab))
                out.append("")
                continue
            if in_table == 1:
                match = re.search(r"\btab\s*\((.)\)", line)
                if match:
                    table_tab = match.group(1)
                if line.rstrip().endswith("."):
                    in_table = 2
                continue
            if line.startswith((".", "'")) and not line.startswith(".T"):
                continue
            table_lines.append(line)
            continue
        if line.startswith((".", "'")) and len(line) > 1:
            body = line[1:].lstrip()
            m = re.match(r"(\S+)\s*(.*)$", body)
            if not m:
                continue
            macro, rest = m.group(1), m.group(2)
            if macro in ("de", "de1", "am", "ig"):
                in_def = True
                continue
            if macro == "TS":
                flush()
                in_table, table_lines, table_tab = 1, [], "\t"
                continue
            if macro == "TH":
                args = _roff_args(rest)
                if args:
                    title = f"{args[0]}({args[1]})" if len(args) > 1 else args[0]
                continue
            if macro in ("SH", "SS", "Sh", "Ss"):
                flush()
                heading = _roff_inline(" ".join(_roff_args(rest)))
                if heading:
                    out.append(heading if macro in ("SS", "Ss") else heading.upper())
                    out.append("")
                continue
            if macro in ("nf", "EX", "Bd"):
                flush(blank=False)
                fill = False
                continue
            if macro in ("fi", "EE", "Ed"):
                flush(blank=False)
                fill = True
                continue
            if macro == "br":
                flush(blank=False)
                continue
            if macro in _FONT_MACROS:
                if rest:
                    emit_text(_roff_inline(" ".join(_roff_args(rest))))
                continue
            if macro in _ALT_MACROS:
                emit_text(_roff_inline("".join(_roff_args(rest))))
                continue
            if macro in ("IP", "TP", "TQ", "HP"):
                flush()
                args = _roff_args(rest)
                if macro == "IP" and args and args[0]:
                    para.append(_roff_inline(args[0]))
                tag_next = macro in ("TP", "TQ")
                continue
            if macro in ("UR", "MT"):
                args = _roff_args(rest)
                if args:
                    emit_text(_roff_inline(args[0]))
                continue
            if macro in ("OP",):
                emit_text("[" + _roff_inline(" ".join(_roff_args(rest))) + "]")
                continue
            if macro in _BREAK_MACROS:
                flush()
                continue
            # unknown or layout-only macro: drop the line
            continue
        text = _roff_inline(line)
        if not text.strip():
            flush()
            continue
        emit_text(text)
    flush()
    text = "\n".join(out)
    if title:
        text = f"{title}\n\n{text}"
    return text


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
