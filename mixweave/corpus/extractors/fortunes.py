"""fortune(6) cookie files in any language, grouped into documents of a few KB."""

from __future__ import annotations

import re
from typing import Iterator

from mixweave.corpus.archives import Archive
from mixweave.corpus.extractors import RawDoc
from mixweave.corpus.normalize import decode_bytes, group_entries

__all__ = ["extract_fortunes", "split_fortunes", "GROUP_BYTES"]

GROUP_BYTES = 4_000
_ART_FILES = frozenset({"art", "ascii-art", "asciiart"})


def split_fortunes(text: str) -> list[str]:
    """The cookies of a fortune file (separated by lines holding only ``%``)."""
    return [c.strip("\n") for c in re.split(r"^%\s*$", text, flags=re.MULTILINE) if c.strip()]


def extract_fortunes(archive: Archive, folder: str = "usr/share/games/fortunes",
                     lang: str = "en") -> Iterator[RawDoc]:
    """Cookies of every fortune file directly in ``folder`` (no ``.dat``/``.u8`` index or
    symlink files, no ASCII-art files), grouped per file into ~4 KB documents."""
    prefix = folder.rstrip("/") + "/"

    def keep(path: str) -> bool:
        name = path[len(prefix):]
        return (path.startswith(prefix) and "/" not in name and not name.endswith((".dat", ".u8"))
                and name not in _ART_FILES)

    for path, data in archive.files(keep):
        name = path[len(prefix):]
        for n, text in enumerate(group_entries(split_fortunes(decode_bytes(data)), GROUP_BYTES), 1):
            yield RawDoc(f"{lang}/{name}/{n:03d}", text, {"path": path, "lang": lang, "file": name})
