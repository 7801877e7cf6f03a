"""Sequence-length phases and long-document upsampling (issue 14 item 1, Effective Long-Context
Scaling): mixture.json v2 variants, the long-window water-filling, phase packs, phase mixtures."""

from __future__ import annotations

import copy
import json

import pytest

from mixweave.data.mixture_manifest import (SCHEMA_VERSION, Variant, build_mixture_manifest,
                                            manifest_problems, mixture_variants, read_mixture_manifest,
                                            write_mixture_manifest)
from mixweave.errors import InputError, ManifestError
from mixweave.mixers import mix_from_stats

TOKENIZER = {"name": "gpt2", "path": "/models/gpt2/tokenizer.json", "sha256": "ab" * 32,
             "vocab_size": 50257, "eos_id": 50256, "dtype": "uint16"}
STATS = {"schema_version": 1, "tokenizer": TOKENIZER,
         "sources": {"web": {"n_docs": 90, "n_tokens": 100_000, "n_bytes": 400_000, "paths": ["w"]},
                     "code": {"n_docs": 40, "n_tokens": 20_000, "n_bytes": 60_000, "paths": ["c"]}}}


def _manifest(variants=None) -> dict:
    mix = mix_from_stats(STATS, method="proportional", budget_tokens=60_000, max_epochs=4)
    return build_mixture_manifest(mix, STATS, seq_len=1024, seed=0, variants=variants)


def _phase_entry(name: str, pack: str | None, **extra) -> dict:
    return {"name": name, "kind": "phase", "mixture": f"variants/{name}.json", "pack": pack,
            "seq_len": 1024, "budget_tokens": 30_000, **extra}


def _write_run(tmp_path, variants):
    """out/mix/mixture.json with its variants' files, out/pack/phases/<name>/ folders."""
    mix_dir, pack = tmp_path / "mix", tmp_path / "pack"
    for v in variants:
        write_mixture_manifest(mix_dir / v["mixture"], _manifest())
        if v["pack"] is not None:
            (pack / v["pack"]).mkdir(parents=True, exist_ok=True)
    pack.mkdir(exist_ok=True)
    return write_mixture_manifest(mix_dir / "mixture.json", _manifest(variants))


def test_schema_v2_variants_round_trip(tmp_path):
    assert SCHEMA_VERSION == 2
    variants = [_phase_entry("short", None, share=0.5), _phase_entry("long", "phases/long", share=0.5,
                                                                     long_docs={"min_tokens": 10})]
    path = _write_run(tmp_path, variants)
    got = mixture_variants(path)
    assert [v.name for v in got] == ["short", "long"] and all(isinstance(v, Variant) for v in got)
    assert got[0].pack_dir == tmp_path / "pack" and got[1].pack_dir == tmp_path / "pack" / "phases" / "long"
    assert got[1].mixture_path == tmp_path / "mix" / "variants" / "long.json"
    assert got[1].extra == {"share": 0.5, "long_docs": {"min_tokens": 10}} and got[1].seq_len == 1024
    other = tmp_path / "elsewhere"
    (other / "phases" / "long").mkdir(parents=True)
    assert mixture_variants(path, pack_root=other)[1].pack_dir == other / "phases" / "long"


def test_v1_still_reads_and_has_no_variants(tmp_path):
    v1 = _manifest()
    assert "variants" not in v1
    v1["schema_version"] = 1
    path = tmp_path / "mix" / "mixture.json"
    path.parent.mkdir()
    path.write_text(json.dumps(v1))
    assert read_mixture_manifest(path)["schema_version"] == 1
    assert mixture_variants(path) == []
    v1["variants"] = [_phase_entry("a", None)]
    assert manifest_problems(v1) == ["$.variants: variants need schema_version 2"]


@pytest.mark.parametrize("change, match", [
    (lambda v: v.update(kind="teacher"), r"\$\.variants\[0\]\.kind"),
    (lambda v: v.update(pack="../../etc"), r"\$\.variants\[0\]\.pack: '\.\./\.\./etc' leaves"),
    (lambda v: v.update(pack="/abs/phases"), r"leaves the pack artifact folder"),
    (lambda v: v.update(mixture="../mixture.json"), r"\$\.variants\[0\]\.mixture"),
    (lambda v: v.update(mixture="variants/other.json"), r"is not variants/a\.json"),
    (lambda v: v.update(name="../a"), r"\$\.variants\[0\]\.name"),
    (lambda v: v.pop("seq_len"), r"'seq_len' is a required property"),
])
def test_a_bad_variant_entry_is_one_manifest_error(tmp_path, change, match):
    entry = _phase_entry("a", None)
    path = _write_run(tmp_path, [entry])
    bad = json.loads(path.read_text())
    change(bad["variants"][0])
    path.write_text(json.dumps(bad))
    with pytest.raises(ManifestError, match=match):
        mixture_variants(path)


def test_missing_variant_files_are_manifest_errors(tmp_path):
    path = _write_run(tmp_path, [_phase_entry("a", "phases/a")])
    (tmp_path / "mix" / "variants" / "a.json").unlink()
    with pytest.raises(ManifestError, match=r"\$\.variants\[0\] \(a\): its mixture .* does not exist"):
        mixture_variants(path)
    path = _write_run(tmp_path, [_phase_entry("a", "phases/a")])
    (tmp_path / "pack" / "phases" / "a").rmdir()
    with pytest.raises(ManifestError, match=r"its pack folder .* does not exist"):
        mixture_variants(path)
    with pytest.raises(InputError, match=r"variant 'a' is listed twice"):
        _manifest([_phase_entry("a", None), _phase_entry("a", None)])


# --------------------------------------------------------------------------- the pure cores
def _brute_force_rates(T, ws, wl, u, cap, steps=200_001):
    """The split with r_s ws + r_l wl = T, 0 <= r <= cap whose ratio r_l / r_s is closest to u
    (a grid over r_l)."""
    import numpy as np

    r_long = np.linspace(0.0, min(cap, T / wl), steps)
    r_short = (T - r_long * wl) / ws
    ok = (r_short >= -1e-12) & (r_short <= cap + 1e-12)
    with np.errstate(divide="ignore"):
        miss = np.abs(np.log(r_long) - np.log(u * np.maximum(r_short, 1e-300)))
    miss[~ok] = np.inf
    best = int(np.argmin(miss))
    return float(r_short[best]), float(r_long[best])


@pytest.mark.parametrize("T, ws, wl, u, cap", [
    (50.0, 40, 10, 4.0, 4.0),     # uncapped: r_l = 4 r_s
    (100.0, 40, 10, 4.0, 2.5),    # the long windows hit the cap, the short ones take the rest
    (30.0, 5, 20, 2.0, 1.2),      # many long windows, capped
    (12.0, 10, 3, 1.0, 4.0),      # u = 1: uniform
    (7.0, 3, 1, 6.0, 10.0),
])
def test_upsample_rates_match_a_brute_force_search(T, ws, wl, u, cap):
    from mixweave.mixers.long_context import upsample_rates

    r_short, r_long = upsample_rates(T, ws, wl, u, cap)
    assert r_short * ws + r_long * wl == pytest.approx(T, rel=1e-12)
    assert r_long <= cap * (1 + 1e-12) and r_short <= cap * (1 + 1e-12)
    bs, bl = _brute_force_rates(T, ws, wl, u, cap)
    assert r_short == pytest.approx(bs, rel=1e-3, abs=1e-4) and r_long == pytest.approx(bl, rel=1e-3, abs=1e-4)


def test_upsample_rates_edge_cases():
    from mixweave.errors import InfeasibleError
    from mixweave.mixers.long_context import upsample_rates

    assert upsample_rates(8.0, 4, 0, 3.0, 4.0) == (2.0, 0.0)   # no long windows
    assert upsample_rates(8.0, 0, 4, 3.0, 4.0) == (0.0, 2.0)   # no short ones
    assert upsample_rates(0.0, 4, 4, 3.0, 4.0) == (0.0, 0.0)
    with pytest.raises(InfeasibleError, match="exceed 2 epochs of 5 windows"):
        upsample_rates(11.0, 3, 2, 3.0, 2.0)


def test_long_window_classification_against_a_hand_count():
    """Documents of 5, 20, 3 and 30 tokens in one stream of 62 (each + EOS), windows of 16, long
    = at least 25 tokens: only the 30-token document is long. Window 0 = doc0 (6) + doc1 (10): no
    long token; window 1 = doc1 (11) + doc2 (4) + doc3 (1): 1 long token; window 2 = doc3 (16)."""
    import numpy as np

    from mixweave.mixers.long_context import LongGroups, split_rows
    from mixweave.retrieval.pack import long_window_mask, window_long_tokens
    from mixweave.retrieval import pack_windows

    lengths = [5, 20, 3, 30]
    tokens = [np.arange(1, n + 1) for n in lengths]
    packed = pack_windows(tokens, np.arange(4), seq_len=16, eos_id=0, shuffle=False)
    long_tok, stream = window_long_tokens(packed.span_window, packed.span_doc, packed.span_start, packed.span_end,
                                          np.array(lengths), packed.n_windows, 25)
    assert long_tok.tolist() == [0, 1, 16] and stream.tolist() == [16, 16, 16]
    mask = long_window_mask(long_tok, stream)
    assert mask.tolist() == [False, False, True]
    assert window_long_tokens(packed.span_window, packed.span_doc, packed.span_start, packed.span_end,
                              np.array(lengths), 3, 20)[0].tolist() == [10, 12, 16]  # doc1 counts too
    new_id, is_long = split_rows(packed.span_window, mask)
    assert is_long.tolist() == [False, False, False, False, False, True]
    assert new_id.tolist() == [0, 0, 1, 1, 1, 0]
    g = LongGroups.of(long_tok, stream)
    assert (g.n_short, g.n_long, g.longdoc_short, g.longdoc_long) == (2, 1, 1, 16)
    assert g.share(1.0, 1.0) == pytest.approx(17 / 48) and g.share(1.0, 4.0) == pytest.approx((1 + 64) / (32 + 64))
    sink = pack_windows(tokens, np.arange(4), seq_len=16, eos_id=0, shuffle=False, sink_id=99)
    _, stream_sink = window_long_tokens(sink.span_window, sink.span_doc, sink.span_start, sink.span_end,
                                        np.array(lengths), sink.n_windows, 25)
    assert stream_sink.tolist() == [15] * sink.n_windows  # the sink is no document's token


# ----------------------------------------------------------------------------------- config
PHASES = [{"name": "short", "share": 0.5}, {"name": "mid", "share": 0.2, "seq_len": 64},
          {"name": "long", "share": 0.3, "seq_len": 256, "long_docs": {"min_tokens": 1000, "upsample": 4}}]


@pytest.mark.parametrize("phases, extra, message", [
    ([{"name": "a", "share": 0.5}, {"name": "b", "share": 0.4}], {}, r"the shares sum to 0\.9, not 1"),
    ([{"name": "a", "share": 0.5}, {"name": "a", "share": 0.5}], {}, "the name a is used twice"),
    ([{"name": "a", "share": 0}], {}, r"mix\.phases\.a\.share must be in \(0, 1\]"),
    ([{"name": "a/b", "share": 1}], {}, "mix.phases name 'a/b'"),
    ([{"name": "a", "share": 1, "seq_len": 8}], {}, r"mix\.phases\.a\.seq_len must be at least 16"),
    ([{"name": "a", "share": 1, "long_docs": {"min_tokens": 10, "upsample": 0.5}}], {}, "upsample must be >= 1"),
    ([{"name": "a", "share": 1, "long_docs": {"min_tokens": 10}}], {}, r"missing key mix\.phases\[0\]\.long_docs\.upsample"),
    ([{"name": "a", "share": 1, "speed": 2}], {}, r"unknown key mix\.phases\[0\]\.speed"),
    ([{"name": "megatron", "share": 1}], {}, "phase name megatron clashes with an export format"),
    ([{"name": "variants", "share": 1}], {}, "clashes with an export format or a reserved folder name"),
    ([{"name": "a", "share": 1, "long_docs": {"min_tokens": 10, "upsample": 2}}], {"order": None},
     "long_docs upsamples long windows of a pack; add an order section"),
    ([{"name": "a", "share": 1}], {"bts": {"experts": {"x": ["web"]}, "expert_budget_tokens": 10,
                                           "stitch_budget_tokens": 10}}, "mix.bts and mix.phases cannot be combined"),
    ([{"name": "a", "share": 1}], {"method": "doremi"}, "doremi trains proxy models and cannot be phased"),
])
def test_bad_phases_are_one_config_error_line(tmp_path, phases, extra, message):
    from mixweave.errors import ConfigError
    from mixweave.pipeline.config import parse_config

    mix = {"method": "unimax", "phases": phases, **{k: v for k, v in extra.items() if k != "order"}}
    data = {"out": str(tmp_path), "sources": {"web": {"paths": ["w"]}, "code": {"paths": ["c"]}},
            "order": {"seq_len": 128}, "mix": mix}
    if "order" in extra:
        data.pop("order")
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(data)
    assert "\n" not in str(info.value)


def test_long_suffix_sources_are_refused_only_with_upsampling(tmp_path):
    from mixweave.errors import ConfigError
    from mixweave.pipeline.config import parse_config

    data = {"out": str(tmp_path), "sources": {"web.long": {"paths": ["w"]}}, "order": {"seq_len": 128},
            "mix": {"phases": [{"name": "a", "share": 1, "seq_len": 256}]}}
    assert [p.name for p in parse_config(data).mix.phases] == ["a"]
    data["mix"]["phases"][0]["long_docs"] = {"min_tokens": 100, "upsample": 2}
    with pytest.raises(ConfigError, match=r"source web\.long ends in \.long"):
        parse_config(data)
    data["mix"]["phases"] = []
    assert parse_config(data).mix.phases is None


# ------------------------------------------------------------------ the stages on the fixture
@pytest.fixture(scope="module")
def phased_run(small_runs, tmp_path_factory):
    """A copy of the small reference run (books, code, web; seq_len 128) re-run through pack and
    mix with three phases: short (main pack), mid (seq_len 64), long (256, long documents x4)."""
    import shutil

    from mixweave.pipeline.runner import run_stages
    from mixweave.pipeline.stages import build_stages

    out = tmp_path_factory.mktemp("phased_run") / "run"
    shutil.copytree(small_runs.reference, out)
    mix = {**small_runs.config_data(out, small_runs.globs)["mix"], "phases": PHASES}
    config = small_runs.config(out, small_runs.globs, mix=mix)
    reports = {r.name: r.status for r in run_stages(build_stages(), config, wanted=["mix"])}
    return out, config, reports


def _pack_manifest(folder):
    return json.loads((folder / "_manifest.json").read_text())


def test_the_main_pack_stays_byte_identical(phased_run, small_runs):
    from mixweave.pipeline.stages.pack import _pack_settings

    out, config, reports = phased_run
    assert reports["pack"] == "ran" and reports["mix"] == "ran" and reports["order"] == "skipped"
    ref, new = _pack_manifest(small_runs.reference / "pack"), _pack_manifest(out / "pack")
    ref_files = {f["path"]: f["sha256"] for f in ref["files"]}
    new_files = {f["path"]: f["sha256"] for f in new["files"]}
    assert {p: new_files[p] for p in ref_files} == ref_files
    assert sorted(set(new_files) - set(ref_files)) and all(p.startswith("phases/") for p in set(new_files) - set(ref_files))
    assert not any(p.startswith("phases/short") for p in new_files)  # same seq_len, no long_docs: the main pack
    assert new["windows"] == ref["windows"]
    assert "phases" not in _pack_settings(small_runs.config(small_runs.reference, small_runs.globs))
    assert [p["name"] for p in _pack_settings(config)["phases"]] == ["mid", "long"]


def test_phase_packs_hold_the_same_order_at_their_seq_len(phased_run, small_runs):
    import numpy as np

    from mixweave.data.windows import read_windows, window_documents, windows_info

    out, config, _ = phased_run
    main = windows_info(out / "pack")
    mid = windows_info(out / "pack" / "phases" / "mid")
    assert mid.seq_len == 64 and mid.sink_id == main.sink_id and sorted(mid.sources) == ["books", "code", "web"]
    for source in mid.sources:
        w_main, w_mid = read_windows(out / "pack", source), read_windows(out / "pack" / "phases" / "mid", source)
        assert w_mid.shape == (mid.sources[source]["n_windows"], 64)
        # the same stream: each main window's documents are those of the mid pack (windows are shuffled)
        docs_main = set(window_documents(out / "pack", source)[1].tolist())
        docs_mid = set(window_documents(out / "pack" / "phases" / "mid", source)[1].tolist())
        assert docs_main <= docs_mid
        assert np.bincount(w_mid.ravel(), minlength=60000)[:50256].sum() >= np.bincount(
            w_main.ravel(), minlength=60000)[:50256].sum() - 128  # same tokens up to the longer tail


def test_long_windows_are_split_into_their_own_sources(phased_run):
    import numpy as np
    import pyarrow.parquet as pq

    from mixweave.data.artifacts import docs_files_by_source, read_source_column
    from mixweave.data.windows import read_windows, windows_info

    out, _, _ = phased_run
    folder = out / "pack" / "phases" / "long"
    info, manifest = windows_info(folder), _pack_manifest(folder)
    stats = manifest["long_docs"]["sources"]
    assert manifest["long_docs"]["min_tokens"] == 1000 and info.seq_len == 256
    files = docs_files_by_source(out / "ingest")
    for source in ("books", "code", "web"):
        doc_tokens = np.asarray(read_source_column(files[source], "n_tokens").to_numpy(zero_copy_only=False))
        s = stats[source]
        groups = [(name, name.endswith(".long")) for name in (source, source + ".long") if name in info.sources]
        assert sum(info.sources[n]["n_windows"] for n, _ in groups) == s["n_windows"]
        assert info.sources.get(source + ".long", {"n_windows": 0})["n_windows"] == s["n_long_windows"]
        long_doc_tokens = 0
        for name, is_long in groups:
            assert read_windows(folder, name).shape == (info.sources[name]["n_windows"], 256)
            spans = pq.read_table(folder / info.sources[name]["files"][0].replace("windows/", "spans/", 1)).to_pandas()
            assert spans.window_id.max() + 1 == info.sources[name]["n_windows"]  # renumbered 0..W-1
            for _, w in spans.groupby("window_id"):  # brute force: each window recounted from its spans
                size = (w.end - w.start).to_numpy()
                longdoc = size[doc_tokens[w.doc.to_numpy()] >= 1000].sum()
                assert (2 * longdoc >= size.sum()) == is_long
                long_doc_tokens += longdoc
        assert long_doc_tokens == s["long_doc_tokens"]
    assert stats["code"]["n_long_windows"] > 0 and stats["web"]["n_long_windows"] < stats["web"]["n_windows"]


def test_variant_mixtures_are_valid_and_add_up(phased_run):
    from mixweave.data.windows import windows_info

    out, config, _ = phased_run
    main = read_mixture_manifest(out / "mix" / "mixture.json")
    assert main["schema_version"] == 2 and [p["budget_tokens"] for p in main["phases"]] == pytest.approx(
        [share * main["budget_tokens"] for share in (0.5, 0.2, 0.3)])
    variants = mixture_variants(out / "mix" / "mixture.json")
    assert [(v.name, v.kind, v.seq_len) for v in variants] == [("short", "phase", 128), ("mid", "phase", 64),
                                                               ("long", "phase", 256)]
    assert variants[0].pack_dir == out / "pack" and variants[2].pack_dir == out / "pack" / "phases" / "long"
    for v, share in zip(variants, (0.5, 0.2, 0.3)):
        m = read_mixture_manifest(v.mixture_path)
        info = windows_info(v.pack_dir)
        assert m["seq_len"] == v.seq_len == info.seq_len and v.extra["share"] == share
        assert m["budget_tokens"] == pytest.approx(share * main["budget_tokens"]) == pytest.approx(v.budget_tokens)
        assert sum(s["target_tokens"] for s in m["sources"]) == pytest.approx(m["budget_tokens"], rel=1e-9)
        assert {s["name"]: s["n_tokens"] for s in m["sources"]} == {n: e["n_tokens"] for n, e in info.sources.items()}
        assert all(s["epochs"] <= 4 * (1 + 1e-9) and s["max_epochs"] == 4 for s in m["sources"])
        assert m["window"]["tokens"] == info.window_tokens
    long = read_mixture_manifest(variants[2].mixture_path)
    by = {s["name"]: s for s in long["sources"]}
    for source in ("books", "code", "web"):  # the phase's target of each source, split over its two groups
        phase_target = main["phases"][2]["weights"][source] * main["phases"][2]["budget_tokens"]
        split = by.get(source, {"target_tokens": 0})["target_tokens"] + by.get(source + ".long", {"target_tokens": 0})["target_tokens"]
        assert split == pytest.approx(phase_target, rel=1e-6)
        if source in by and source + ".long" in by and by[source + ".long"]["epochs"] < 4 * (1 - 1e-9):
            assert by[source + ".long"]["epochs"] == pytest.approx(4 * by[source]["epochs"])  # u = 4, uncapped
    block = variants[2].extra["long_docs"]
    assert block["min_tokens"] == 1000 and block["upsample"] == 4
    assert 0 < block["share_before"] < block["share_after"] < 1
    assert variants[0].extra["long_docs"] is None


@pytest.mark.spark
def test_spark_path_phase_packs_equal_the_in_process_ones(phased_run, small_runs, spark, tmp_path):
    """The pack stage's Spark path for one source of the mid phase (seq_len 64) writes the
    in-process phase pack's files byte for byte; with every source on the Spark path
    (distributed_min_docs 0) the stage's long_docs phase (windows split into ``<source>`` and
    ``<source>.long``, renumbered in output order) writes the in-process long phase's files byte for
    byte, with the same windows entries and long_docs statistics."""
    import numpy as np

    from mixweave.data.tokenizer import load_tokenizer
    from mixweave.pipeline.runner import StageContext, run_stage
    from mixweave.pipeline.stages import build_stages
    from mixweave.pipeline.stages.pack import spark_phase_source
    from mixweave.retrieval.pack import source_seed

    out, config, _ = phased_run
    tok = load_tokenizer("default")
    entries, long_stats = spark_phase_source(StageContext(config=config, out=out), config.mix.phases[1], tmp_path, "web",
                                             seed=source_seed(config.seed, "web"), eos_id=tok.eos_id,
                                             dtype=str(np.dtype(tok.info["dtype"])), sink_id=None)
    entry = entries["web"]
    local = _pack_manifest(out / "pack" / "phases" / "mid")["windows"]["sources"]["web"]
    assert long_stats is None and entry.pop("path") == "spark" and {k: local[k] for k in entry} == entry
    folder = out / "pack" / "phases" / "mid"
    files = sorted(p.relative_to(folder) for p in folder.rglob("*.parquet") if "web" in p.parts)
    assert files == sorted(p.relative_to(tmp_path / "phases" / "mid") for p in tmp_path.rglob("*.parquet")) and files
    for rel in files:
        assert (folder / rel).read_bytes() == (tmp_path / "phases" / "mid" / rel).read_bytes(), rel

    data = small_runs.config_data(out, small_runs.globs)
    phases = [{**PHASES[0], "share": 0.7}, PHASES[2]]  # the long phase alone beside the main pack
    spark_config = small_runs.config(out, small_runs.globs, order={**data["order"], "distributed_min_docs": 0},
                                     mix={**data["mix"], "phases": phases})
    assert run_stage(build_stages()["pack"], StageContext(config=spark_config, out=out, _spark=spark,
                                                          overrides={"pack": tmp_path / "p2"})).status == "ran"
    want, got = out / "pack" / "phases" / "long", tmp_path / "p2" / "phases" / "long"
    want_m, got_m = _pack_manifest(want), _pack_manifest(got)
    assert any(name.endswith(".long") for name in got_m["windows"]["sources"])
    assert {n: {k: v for k, v in e.items() if k != "path"} for n, e in got_m["windows"]["sources"].items()} == \
        {n: {k: v for k, v in e.items() if k != "path"} for n, e in want_m["windows"]["sources"].items()}
    assert {e["path"] for e in got_m["windows"]["sources"].values()} == {"spark"}
    assert got_m["long_docs"] == want_m["long_docs"]
    files = sorted(p.relative_to(want) for p in want.rglob("*.parquet"))
    assert files == sorted(p.relative_to(got) for p in got.rglob("*.parquet"))
    for rel in files:
        assert (want / rel).read_bytes() == (got / rel).read_bytes(), rel


def test_the_report_has_a_line_per_phase_with_the_long_text_share(phased_run):
    from mixweave.mixers.long_context import phase_lines
    from mixweave.pipeline.report import build_report

    out, _, _ = phased_run
    mixture = read_mixture_manifest(out / "mix" / "mixture.json")
    lines = phase_lines(mixture)
    assert [line.split(":")[0] for line in lines] == ["phase short", "phase mid", "phase long"]
    assert lines[1].startswith("phase mid: seq_len 64, share 0.2 of the budget, ")
    block = mixture["variants"][2]["long_docs"]
    assert (f"upsampled x4: long-text token share {100 * block['share_before']:.1f} % -> "
            f"{100 * block['share_after']:.1f} %") in lines[2]
    html = build_report(out)
    assert all(line.replace(">", "&gt;") in html for line in lines)
    assert phase_lines({"variants": [{"kind": "expert"}]}) == []


def test_phase_lines_name_sources_the_phase_does_not_draw():
    from mixweave.mixers.long_context import phase_lines

    src = {"a": {"before": 0.25, "after": 0.5}, "b": {"before": 0.9, "after": None}}
    variant = {"kind": "phase", "name": "long", "seq_len": 2048, "share": 0.2, "budget_tokens": 4e6,
               "long_docs": {"min_tokens": 4096, "upsample": 4, "share_before": 0.25, "share_after": 0.5, "sources": src}}
    assert phase_lines({"variants": [variant]}) == [
        "phase long: seq_len 2048, share 0.2 of the budget, 4,000,000 tokens; documents of >= 4096 tokens upsampled "
        "x4: long-text token share 25.0 % -> 50.0 % (a 25.0 % -> 50.0 %); not drawn in this phase: b"]
