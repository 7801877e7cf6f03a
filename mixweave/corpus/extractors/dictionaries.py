"""Dictionaries and glossaries: dictd databases (FOLDOC, Devil's Dictionary), the Jargon File.

Entries are short, so consecutive entries with the same initial are grouped into documents of
a few KB (``<initial>/<n>``).
"""

from __future__ import annotations

import gzip
import re
import textwrap
from itertools import groupby
from typing import Iterable, Iterator

from mixweave.corpus.archives import Archive
from mixweave.corpus.extractors import RawDoc
from mixweave.corpus.normalize import decode_bytes, group_entries

__all__ = ["extract_dictd", "extract_jargon", "parse_dictd", "split_jargon",
           "GROUP_BYTES"]

GROUP_BYTES = 4_000
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64_number(digits: str) -> int:
    value = 0
    for char in digits:
        value = value * 64 + _B64.index(char)
    return value


def _initial(headword: str) -> str:
    first = headword.lstrip("\"'(-.:/@!#$%&*")[:1].upper()
    return first if "A" <= first <= "Z" else "0"


def parse_dictd(index: str, data: bytes) -> list[tuple[str, str]]:
    """``(headword, definition)`` pairs of a dictd database, in index order, each entry once.

    Index lines are ``headword<TAB>offset<TAB>length`` with base-64 numbers; several headwords
    can share one entry, and ``00-database-*`` lines are metadata.
    """
    seen: set[tuple[int, int]] = set()
    entries: list[tuple[str, str]] = []
    for line in index.splitlines():
        fields = line.split("\t")
        if len(fields) < 3 or fields[0].startswith("00-database") or fields[0].startswith("00database"):
            continue
        offset, length = _b64_number(fields[1]), _b64_number(fields[2])
        if (offset, length) in seen:
            continue
        seen.add((offset, length))
        body = decode_bytes(data[offset:offset + length])
        entries.append((fields[0], textwrap.dedent(body).strip()))
    return entries


def _grouped_docs(entries: Iterable[tuple[str, str]], meta: dict) -> Iterator[RawDoc]:
    ordered = sorted(entries, key=lambda item: _initial(item[0]))  # stable: keeps entry order
    for initial, items in groupby(ordered, key=lambda item: _initial(item[0])):
        items = list(items)
        for n, text in enumerate(group_entries((t for _, t in items), GROUP_BYTES), 1):
            yield RawDoc(f"{initial}/{n:03d}", text, {**meta, "initial": initial})


def extract_dictd(archive: Archive, name: str) -> Iterator[RawDoc]:
    """Entries of the dictd database ``usr/share/dictd/<name>.{index,dict.dz}``, grouped by
    initial letter into documents of about 4 KB."""
    index = decode_bytes(archive.read(f"usr/share/dictd/{name}.index"))
    data = gzip.decompress(archive.read(f"usr/share/dictd/{name}.dict.dz"))
    entries = parse_dictd(index, data)
    yield from _grouped_docs(entries, {"dictionary": name})


_JARGON_ENTRY_RE = re.compile(r"^   :(.+?):(?=\s|$)", re.MULTILINE)
_TOC_LINE = "   Table of Contents"


def _drop_toc(lines: list[str]) -> list[str]:
    """Remove 'Table of Contents' blocks (up to the next column-0 heading)."""
    kept: list[str] = []
    in_toc = False
    for line in lines:
        if line.rstrip() == _TOC_LINE:
            in_toc = True
            continue
        if in_toc and line[:1] not in ("", " "):
            in_toc = False
        if not in_toc:
            kept.append(line)
    return kept


def split_jargon(text: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(chapters, entries)`` of jargon.txt: the front/back-matter chapters as
    ``(title, text)`` and the glossary entries as ``(headword, text)``."""
    lines = text.splitlines()
    entry_starts = [i for i, ln in enumerate(lines) if _JARGON_ENTRY_RE.match(ln)]
    if not entry_starts:
        return [], []
    first, last = entry_starts[0], entry_starts[-1]
    # glossary ends at the first column-0 heading or TOC after the last entry
    end = next((i for i in range(last + 1, len(lines))
                if lines[i].rstrip() == _TOC_LINE or lines[i][:1] not in ("", " ")
                or re.match(r"^\s+Part\s[IVX]+\.", lines[i])), len(lines))
    entries = []
    for n, start in enumerate(entry_starts):
        stop = entry_starts[n + 1] if n + 1 < len(entry_starts) else end
        headword = _JARGON_ENTRY_RE.match(lines[start]).group(1)
        body = "\n".join(re.sub(r"^ {1,3}", "", ln) for ln in lines[start:stop])
        entries.append((headword, body.strip()))
    chapters: list[tuple[str, str]] = []
    for block in (lines[:first], lines[end:]):
        block = _drop_toc(block)
        heads = [i for i, ln in enumerate(block)
                 if re.match(r"^(Chapter\s\d+\.|Appendix\s[A-Z]\.|Glossary|Bibliography)", ln)]
        for n, start in enumerate(heads):
            stop = heads[n + 1] if n + 1 < len(heads) else len(block)
            chapter = "\n".join(re.sub(r"^ {1,3}", "", ln) for ln in block[start:stop]).strip()
            if block[start].startswith("Glossary"):
                continue
            chapters.append((block[start].replace("\u00a0", " ").strip(), chapter))
    return chapters, entries


def extract_jargon(archive: Archive) -> Iterator[RawDoc]:
    """The Jargon File 4.4.7: each chapter/appendix is a document; glossary entries are grouped
    by initial into documents of about 4 KB."""
    path = "usr/share/doc/jargon-text/jargon.txt.gz"
    chapters, entries = split_jargon(decode_bytes(gzip.decompress(archive.read(path))))
    for n, (title, text) in enumerate(chapters, 1):
        yield RawDoc(f"chapter/{n:02d}", text, {"path": path, "title": title})
    yield from _grouped_docs(entries, {"path": path})
