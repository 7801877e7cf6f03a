"""Man pages (roff) from the Debian manpages packages, stripped to plain text in Python."""

from __future__ import annotations

import gzip
import re
from typing import Iterator

from mixweave.corpus.archives import Archive
from mixweave.corpus.extractors import RawDoc
from mixweave.corpus.extractors.roff import strip_roff
from mixweave.corpus.normalize import decode_bytes

__all__ = ["extract_man_pages", "MAN_SECTION_PATTERN"]

MAN_SECTION_PATTERN = r"^[A-Z][A-Z0-9 ,/-]{2,}$"


def _is_stub(source: str) -> bool:
    """A ``.so other.page`` redirect page (no text of its own)."""
    lines = [ln for ln in source.splitlines()
             if ln.strip() and not ln.startswith((".\\\"", "'\\\""))]
    return bool(lines) and lines[0].startswith(".so ") and len(lines) <= 2


def extract_man_pages(archive: Archive, lang: str = "en") -> Iterator[RawDoc]:
    """One real (non-``.so``) man page = one document; ``lang`` 'en' reads ``usr/share/man/manN``,
    another code reads ``usr/share/man/<lang>/manN``."""
    prefix = "usr/share/man/" if lang == "en" else f"usr/share/man/{lang}/"
    pattern = re.compile(re.escape(prefix) + r"man(\d\w*)/([^/]+?)(?:\.gz)?$")
    for path, data in archive.files(lambda p: pattern.match(p) is not None):
        match = pattern.match(path)
        if path.endswith(".gz"):
            data = gzip.decompress(data)
        source = decode_bytes(data)
        if _is_stub(source):
            continue
        page = match.group(2)
        yield RawDoc(f"{lang}/man{match.group(1)}/{page}", strip_roff(source),
                     {"path": path, "section": match.group(1), "page": page, "lang": lang})
