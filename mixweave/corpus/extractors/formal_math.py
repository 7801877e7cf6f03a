"""Formal mathematics: Metamath databases (set.mm...) split at section banners; the Coq
standard library (.v files)."""

from __future__ import annotations

import re
from typing import Iterator

from mixweave.corpus.archives import Archive
from mixweave.corpus.extractors import RawDoc
from mixweave.corpus.normalize import decode_bytes, merge_short_units, slugify

__all__ = ["extract_metamath", "extract_coq_stdlib", "split_metamath"]

# A section starts with "$(" on its own line followed by a banner line: #*#* (part),
# =-=-= (chapter) or -.-.- (section); the next line is the title.
_BANNER_START_RE = re.compile(r"^\$\(\s*\n(#\*#\*|=-=-|-\.-\.)[^\n]*\n([^\n]*)\n", re.MULTILINE)
_LEVELS = {"#*#*": "part", "=-=-": "chapter", "-.-.": "section"}


def split_metamath(text: str) -> list[tuple[str, str, str]]:
    """``(level, title, text)`` sections of a Metamath database, split before each banner
    comment. Text before the first banner is the ``preamble``."""
    matches = list(_BANNER_START_RE.finditer(text))
    sections: list[tuple[str, str, str]] = []
    if not matches:
        return [("file", "", text)]
    if matches[0].start() > 0:
        sections.append(("preamble", "preamble", text[:matches[0].start()]))
    for n, match in enumerate(matches):
        end = matches[n + 1].start() if n + 1 < len(matches) else len(text)
        sections.append((_LEVELS[match.group(1)], match.group(2).strip(), text[match.start():end]))
    return sections


def extract_metamath(archive: Archive, databases: tuple[str, ...] = ("set.mm",)) -> Iterator[RawDoc]:
    """Sections of the given Metamath databases (``usr/share/metamath/databases/*.mm``), one
    document per part/chapter/section banner; very short sections merge with the next."""
    prefix = "usr/share/metamath/databases/"
    wanted = {prefix + name for name in databases}
    for path, data in archive.files(lambda p: p in wanted):
        database = path[len(prefix):]
        sections = split_metamath(decode_bytes(data))
        keyed = [(f"{n:04d}|{level}|{title}", text)
                 for n, (level, title, text) in enumerate(sections, 1)]
        for key, text in merge_short_units(keyed, min_chars=200, joiner=""):
            number, level, title = key.split("|", 2)
            yield RawDoc(f"{database}/{number}-{slugify(title, 40)}", text,
                         {"path": path, "database": database, "level": level, "title": title})


def extract_coq_stdlib(archive: Archive) -> Iterator[RawDoc]:
    """One ``.v`` file of the Coq standard library (``theories/``) = one document."""
    pattern = re.compile(r"usr/lib/ocaml/coq/(theories|user-contrib)/(.+\.v)$")
    for path, data in archive.files(lambda p: pattern.match(p) is not None):
        rel = pattern.match(path).group(2)
        yield RawDoc(rel, decode_bytes(data), {"path": path, "language": "coq"})
