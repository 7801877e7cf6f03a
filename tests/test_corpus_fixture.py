"""The checked-in fixture ``tests/data/``: layout, size, sources, benchmarks kept apart."""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import pytest

from mixweave.corpus.contamination import ContaminationChecker, word_ngrams

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "corpus"
CACHE = Path(__file__).resolve().parents[1] / "cache"


def _manifest() -> dict:
    return json.loads((CORPUS / "corpus_manifest.json").read_text(encoding="utf-8"))


def _package_versions(manifest: dict) -> set[tuple[str, str, str]]:
    return {(p["registry"], p["name"], p["version"]) for source in manifest["sources"].values()
            for p in source.get("packages", [])}


def _cached_package_versions() -> set[tuple[str, str, str]] | None:
    """(registry, name, version) of the fixture tier's packages as found in ./cache, the way
    ``resolve_package`` names their versions (a .deb's control field, else the pinned version);
    None when one is missing (the build then says which)."""
    from mixweave.corpus.archives import deb_control_fields
    from mixweave.corpus.fetch import find_cached
    from mixweave.corpus.fixture import FIXTURE_TIER
    from mixweave.corpus.packages import PACKAGES

    versions = set()
    for key in dict.fromkeys(spec.package for spec in FIXTURE_TIER.extractors()):
        spec = PACKAGES[key]
        if spec.registry == "python":
            versions.add((spec.registry, spec.name, platform.python_version()))
            continue
        path = find_cached(spec, CACHE)
        if path is None:
            return None
        version = deb_control_fields(path).get("Version", "unknown") if spec.registry == "deb" else spec.version or "unknown"
        versions.add((spec.registry, spec.name, version))
    return versions


def _corpus() -> list[dict]:
    return [json.loads(line) for path in sorted(CORPUS.glob("*/*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()]


def _benchmarks() -> list[dict]:
    return [json.loads(line) for line in
            (CORPUS / "benchmarks.jsonl").read_text(encoding="utf-8").splitlines()]


def test_fixture_is_small():
    size = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert size <= 2_000_000, f"tests/data is {size} bytes; keep it under 2 MB"


def test_fixture_layout_matches_a_corpus_build():
    sources = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())
    assert len(sources) >= 8
    for source in sources:
        assert (CORPUS / source / f"{source}-00000.jsonl").is_file()
    assert (CORPUS / "benchmarks.jsonl").is_file()
    assert (DATA / "ATTRIBUTION.md").is_file()
    assert sorted(_manifest()["sources"]) == sources


def test_fixture_records_follow_the_schema():
    records = _corpus()
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids))
    by_source: dict[str, int] = {}
    for record in records:
        assert set(record) == {"id", "text", "source", "meta"}
        assert record["id"].startswith(record["source"] + "/")
        assert len(record["text"]) >= 200
        assert {"extractor", "package", "version"} <= set(record["meta"])
        by_source[record["source"]] = by_source.get(record["source"], 0) + 1
    assert len(by_source) >= 8
    assert min(by_source.values()) >= 20, by_source     # a few dozen docs per source


def test_fixture_manifest_matches_files():
    manifest = _manifest()
    for source, entry in manifest["sources"].items():
        assert entry["packages"], source
        assert all(p["sha256"] and p["version"] and p["licence"] for p in entry["packages"])
        for file in entry["files"]:
            data = (CORPUS / file["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == file["sha256"]
            assert data.count(b"\n") == file["docs"]
    bench = (CORPUS / "benchmarks.jsonl").read_bytes()
    assert hashlib.sha256(bench).hexdigest() == manifest["benchmarks"]["sha256"]
    assert manifest["totals"]["docs"] == len(_corpus())


def test_fixture_benchmarks_cover_the_five_families():
    bench = _benchmarks()
    names = {b["benchmark"] for b in bench}
    assert {"humaneval", "mbpp", "gsm8k", "mmlu"} <= names
    assert names & {"arc_challenge", "arc_easy"}
    assert all(set(b) == {"benchmark", "split", "id", "prompt", "answer"} for b in bench)
    assert all(b["prompt"].strip() and b["answer"].strip() for b in bench)


def test_benchmarks_never_in_the_corpus():
    records, bench = _corpus(), _benchmarks()
    texts = "\n".join(r["text"] for r in records)
    for example in bench:
        assert example["prompt"].strip() not in texts
        assert example["id"] not in {r["id"] for r in records}
    checker = ContaminationChecker(bench)
    for record in records:
        checker.add_document(record["id"], record["source"], record["text"])
    report = checker.report()
    assert report["total_contaminated_examples"] == 0
    assert _manifest()["contamination"]["total_contaminated_examples"] == 0


def test_contamination_check_finds_an_injected_overlap():
    bench = _benchmarks()
    gsm = next(b for b in bench if b["benchmark"] == "gsm8k")
    records = _corpus()
    checker = ContaminationChecker(bench)
    for record in records[:50]:
        checker.add_document(record["id"], record["source"], record["text"])
    victim = records[60]
    injected = victim["text"][:500] + "\n" + gsm["prompt"] + "\n" + victim["text"][500:]
    assert checker.add_document(victim["id"], victim["source"], injected) > 0
    report = checker.report()["benchmarks"]["gsm8k"]
    assert report["contaminated_examples"] == 1 and report["matching_docs"] == 1
    assert report["matches"][0] == {"id": gsm["id"], "doc_id": victim["id"],
                                    "source": victim["source"],
                                    "ngram": report["matches"][0]["ngram"]}
    assert report["matches"][0]["ngram"] in word_ngrams(gsm["prompt"])
    assert checker.report()["benchmarks"]["mmlu"]["contaminated_examples"] == 0


def test_short_benchmark_examples_are_reported_as_uncheckable():
    checker = ContaminationChecker([{"benchmark": "t", "id": "1", "prompt": "two words",
                                     "answer": ""}])
    checker.add_document("d", "s", "two words " * 20)
    stats = checker.report()["benchmarks"]["t"]
    assert stats["checkable_examples"] == 0 and stats["contaminated_examples"] == 0


@pytest.mark.slow
@pytest.mark.skipif(not (CACHE / "npm").is_dir(), reason="needs the package cache (./cache)")
def test_fixture_regenerates_identically_from_the_cache(tmp_path):
    from mixweave.corpus.fixture import make_fixture

    # the two skip conditions below, checked before the build (seconds) from what it would record:
    # the Python version and each cached package's version (resolve_package's rule, without hashing)
    if platform.python_version() != _manifest()["python_version"]:
        pytest.skip("the code source depends on the Python version")
    cached, committed = _cached_package_versions(), _package_versions(_manifest())
    if cached is not None and cached != committed:
        pytest.skip(f"./cache holds other package versions than the fixture was built from: "
                    f"{sorted(cached - committed)[:3]} instead of {sorted(committed - cached)[:3]}")
    manifest = make_fixture(CACHE, tmp_path)
    if manifest["python_version"] != _manifest()["python_version"]:
        pytest.skip("the code source depends on the Python version")
    cached, committed = _package_versions(manifest), _package_versions(_manifest())
    if cached != committed:  # a registry moved on (e.g. a Debian security update) since the fixture was built
        pytest.skip(f"./cache holds other package versions than the fixture was built from: "
                    f"{sorted(cached - committed)[:3]} instead of {sorted(committed - cached)[:3]}")
    for path in sorted(CORPUS.rglob("*")):
        if path.is_file():
            assert (tmp_path / "corpus" / path.relative_to(CORPUS)).read_bytes() == \
                path.read_bytes(), path
    assert (tmp_path / "ATTRIBUTION.md").read_text() == (DATA / "ATTRIBUTION.md").read_text()


def test_generic_token_runs_are_not_flagged():
    checker = ContaminationChecker([{"benchmark": "t", "id": "1",
                                     "prompt": "digits 0 1 2 3 4 5 6 7 8 9 a b c d e f", "answer": ""}])
    checker.add_document("d", "s", "hex: 0 1 2 3 4 5 6 7 8 9 a b c d e f")
    assert checker.report()["total_contaminated_examples"] == 0
