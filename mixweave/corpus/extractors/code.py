"""Source code: the running CPython's standard library, the Go standard library."""

from __future__ import annotations

import platform
from typing import Iterator

from mixweave.corpus.archives import Archive
from mixweave.corpus.extractors import RawDoc
from mixweave.corpus.normalize import decode_bytes

__all__ = ["is_stdlib_source", "extract_python_stdlib", "extract_go_stdlib",
           "PYTHON_SECTION_PATTERN", "GO_SECTION_PATTERN"]

_SKIPPED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests",
                           "idle_test"})
PYTHON_SECTION_PATTERN = r"^(?:class |def |async def |@)"
GO_SECTION_PATTERN = r"^(?:func |type |var \(|const \(|// [A-Z]\w* )"


def is_stdlib_source(rel_path: str) -> bool:
    """True for a non-test stdlib ``.py`` file (no site-packages, caches, test dirs, lib2to3 data)."""
    if not rel_path.endswith(".py"):
        return False
    parts = rel_path.split("/")
    return not any(part in _SKIPPED_DIRS for part in parts[:-1])


def extract_python_stdlib(archive: Archive) -> Iterator[RawDoc]:
    """One ``.py`` file of the standard library = one document."""
    version = platform.python_version()
    for path, data in archive.files(is_stdlib_source):
        yield RawDoc(path, decode_bytes(data),
                     {"path": path, "language": "python", "python_version": version})


def extract_go_stdlib(archive: Archive) -> Iterator[RawDoc]:
    """One non-test ``.go`` file of golang-1.x-src = one document (no ``testdata/``)."""
    def keep(path: str) -> bool:
        return (path.startswith("usr/share/go-") and "/src/" in path and path.endswith(".go")
                and not path.endswith("_test.go") and "/testdata/" not in path)

    for path, data in archive.files(keep):
        rel = path.split("/src/", 1)[1]
        yield RawDoc(rel, decode_bytes(data), {"path": rel, "language": "go"})
