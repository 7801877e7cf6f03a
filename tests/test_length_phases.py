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
