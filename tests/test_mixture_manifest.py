"""mixture.json v1: build, atomic deterministic write, validated read, rejection of bad manifests."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from mixweave.data.mixture_manifest import (build_mixture_manifest, manifest_bytes, mixture_schema,
                                            read_mixture_manifest, write_mixture_manifest)
from mixweave.errors import InputError, ManifestError
from mixweave.mixers import mix_from_stats, solve_phases

TOKENIZER = {"name": "gpt2", "path": "/models/gpt2/tokenizer.json", "sha256": "ab" * 32,
             "vocab_size": 50257, "eos_id": 50256, "dtype": "uint16"}
STATS = {
    "schema_version": 1,
    "tokenizer": TOKENIZER,
    "sources": {
        "web": {"n_docs": 900, "n_tokens": 1_000_000, "n_bytes": 4_000_000,
                "paths": ["data/web/a.jsonl", "data/web/b.jsonl"], "length_histogram": {"1024": 900}},
        "code": {"n_docs": 40, "n_tokens": 50_000, "n_bytes": 150_000,
                 "paths": ["data/code/*.jsonl"], "length_histogram": {"2048": 40}},
    },
}
UTILITY = {"web": {"arc": 0.4, "mbpp": 0.1}, "code": {"arc": 0.2, "mbpp": 0.5}}


@pytest.fixture
def manifest() -> dict:
    mix = mix_from_stats(STATS, method="utilimax", budget_tokens=2e6, max_epochs=4, utility=UTILITY)
    return build_mixture_manifest(mix, STATS, seq_len=2048, seed=1234,
                                  order={"method": "icp", "windows": "out/windows"})


def test_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(mixture_schema())


def test_build_fills_every_field(manifest):
    assert manifest["schema_version"] == 2 and manifest["unit"] == "tokens"
    assert manifest["budget_tokens"] == 2_000_000 and isinstance(manifest["budget_tokens"], int)
    assert manifest["tokenizer"] == TOKENIZER
    assert manifest["window"] == {"tokens": 2048, "doc_separator": "eos", "labels": "shift_within_window"}
    assert manifest["method"]["name"] == "utilimax" and manifest["method"]["solver"] == "CLARABEL"
    web = manifest["sources"][0]
    assert web["name"] == "web" and web["paths"] == STATS["sources"]["web"]["paths"]
    assert web["n_docs"] == 900 and web["utility"] == {"arc": 0.4, "mbpp": 0.1}
    assert sum(s["weight"] for s in manifest["sources"]) == pytest.approx(1.0)


def test_round_trip_and_deterministic_bytes(tmp_path, manifest):
    path = write_mixture_manifest(tmp_path / "mix" / "mixture.json", manifest)
    assert read_mixture_manifest(path) == manifest
    first = path.read_bytes()
    write_mixture_manifest(path, read_mixture_manifest(path))
    assert path.read_bytes() == first == manifest_bytes(manifest)
    assert list(tmp_path.joinpath("mix").iterdir()) == [path]  # no temp file left behind
    keys = list(json.loads(first))
    assert keys == sorted(keys)


def test_tokenizer_from_argument_and_missing(manifest):
    mix = mix_from_stats(STATS, method="unimax", budget_tokens=2e6, max_epochs=4)
    stats = {**STATS, "tokenizer": None}
    built = build_mixture_manifest(mix, stats, seq_len=16, tokenizer=TOKENIZER, seed=0)
    assert built["tokenizer"] == TOKENIZER and built["order"] is None
    with pytest.raises(InputError, match="no tokenizer description"):
        build_mixture_manifest(mix, stats, seq_len=16, seed=0)
    with pytest.raises(InputError, match="lacks sha256"):
        build_mixture_manifest(mix, STATS, seq_len=16, seed=0,
                               tokenizer={k: v for k, v in TOKENIZER.items() if k != "sha256"})
    with pytest.raises(InputError, match=r"\$\.tokenizer\.sha256"):
        build_mixture_manifest(mix, STATS, seq_len=16, seed=0, tokenizer={**TOKENIZER, "sha256": "xyz"})


def test_build_rejects_stats_that_do_not_match():
    mix = mix_from_stats(STATS, method="unimax", budget_tokens=2e6, max_epochs=4)
    stats = copy.deepcopy(STATS)
    del stats["sources"]["code"]
    with pytest.raises(InputError, match="no entry for sources code"):
        build_mixture_manifest(mix, stats, seq_len=16, seed=0)
    stats = copy.deepcopy(STATS)
    stats["sources"]["code"]["n_tokens"] = 60_000
    with pytest.raises(InputError, match="re-run the mix stage"):
        build_mixture_manifest(mix, stats, seq_len=16, seed=0)


def test_phases_round_trip(tmp_path):
    combined, phases = solve_phases(STATS["sources"], [(500_000, {"web": .9, "code": .1}),
                                                       (1_000_000, "unimax")], max_epochs=4)
    built = build_mixture_manifest(combined, STATS, seq_len=512, seed=0, phases=phases)
    assert [p["name"] for p in built["phases"]] == ["phase_0", "phase_1"]
    path = write_mixture_manifest(tmp_path / "mixture.json", built)
    assert read_mixture_manifest(path)["phases"][1]["method"]["name"] == "unimax"
    bad = copy.deepcopy(built)
    bad["phases"][0]["budget_tokens"] = 1
    with pytest.raises(ManifestError, match=r"\$\.phases\[\*\]\.budget_tokens"):
        write_mixture_manifest(tmp_path / "bad.json", bad)


def _set(manifest: dict, path: tuple, value) -> dict:
    m = copy.deepcopy(manifest)
    target = m
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return m


_DELETE = object()


@pytest.mark.parametrize("path, value, where", [
    (("schema_version",), _DELETE, r"\$: 'schema_version' is a required property"),
    (("unit",), "documents", r"\$\.unit"),
    (("sources", 1, "weight"), -0.1, r"\$\.sources\[1\]\.weight"),
    (("sources", 0, "binding"), "magic", r"\$\.sources\[0\]\.binding"),
    (("sources", 0, "surprise"), 1, r"\$\.sources\[0\]: Additional properties"),
    (("tokenizer", "sha256"), "not-a-hash", r"\$\.tokenizer\.sha256"),
    (("tokenizer", "eos_id"), 60000, r"\$\.tokenizer\.eos_id: 60000 is not below vocab_size"),
    (("tokenizer", "vocab_size"), 100_000, r"\$\.tokenizer\.dtype: uint16 cannot hold"),
    (("window", "tokens"), 2049, r"\$\.window\.tokens"),
    (("sources", 1, "name"), "web", r"\$\.sources\[1\]\.name: source 'web' is listed twice"),
    (("sources", 0, "weight"), 0.5, r"weights sum to|\$\.sources\[0\]\.target_tokens"),
    (("sources", 1, "target_tokens"), 1.0, r"\$\.sources\[1\]\.target_tokens"),
    (("sources", 1, "epochs"), 9.0, r"\$\.sources\[1\]\.epochs"),
    (("budget_tokens",), 0, r"\$\.budget_tokens"),
    (("seed",), -1, r"\$\.seed"),
    (("order",), {"method": "icp"}, r"\$\.order"),
    (("method", "status"), "infeasible", r"\$\.method\.status"),
])
def test_read_rejects_bad_manifests_naming_the_json_path(tmp_path, manifest, path, value, where):
    bad = _set(manifest, path, value)
    file = tmp_path / "mixture.json"
    file.write_text(json.dumps(bad))
    with pytest.raises(ManifestError, match=where):
        read_mixture_manifest(file)
    with pytest.raises(ManifestError):
        write_mixture_manifest(tmp_path / "out.json", bad)
    assert not (tmp_path / "out.json").exists()


def test_epochs_over_the_cap_are_rejected(tmp_path, manifest):
    bad = copy.deepcopy(manifest)
    src = bad["sources"][1]
    src["max_epochs"] = src["epochs"] / 2
    file = tmp_path / "m.json"
    file.write_text(json.dumps(bad))
    with pytest.raises(ManifestError, match=r"\$\.sources\[1\]\.epochs: .* exceeds max_epochs"):
        read_mixture_manifest(file)


@pytest.mark.parametrize("text, match", [
    ("{not json", "not valid JSON"),
    ('{"budget_tokens": NaN}', "not valid JSON"),
    ("[]", r"\$: \[\] is not of type 'object'"),
    ('{"schema_version": 3}', "newer than this mixweave"),
])
def test_read_rejects_unparsable_files(tmp_path, text, match):
    file = tmp_path / "mixture.json"
    file.write_text(text)
    with pytest.raises(ManifestError, match=match):
        read_mixture_manifest(file)


def test_read_missing_file(tmp_path):
    with pytest.raises(ManifestError, match="run `mixweave mix` first"):
        read_mixture_manifest(tmp_path / "nope.json")


def test_write_rejects_nan_and_keeps_the_old_file(tmp_path, manifest):
    path = write_mixture_manifest(tmp_path / "mixture.json", manifest)
    before = path.read_bytes()
    bad = _set(manifest, ("sources", 0, "epochs"), float("nan"))
    with pytest.raises(ManifestError, match=r"\$\.sources\[0\]\.epochs: NaN"):
        write_mixture_manifest(path, bad)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["mixture.json"]
