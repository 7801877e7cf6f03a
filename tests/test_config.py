"""Config: YAML into frozen dataclasses, errors that name the key and the fix."""

from __future__ import annotations

import dataclasses

import pytest

from mixweave.pipeline.config import apply_overrides, load_config, parse_config
from mixweave.errors import ConfigError

BASE = {"sources": {"web": {"paths": ["data/*.jsonl"]}}}


def test_defaults_and_frozen():
    config = parse_config(BASE)
    assert config.spark.master == "local[*]" and config.tokenizer.path == "default"
    assert config.sources["web"].paths == ("data/*.jsonl",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.out = "x"  # type: ignore[misc]


def test_string_path_becomes_tuple_and_numbers_parse():
    config = parse_config({"sources": {"a": {"paths": "x/*.jsonl"}}, "mix": {"budget_tokens": "2e9", "max_epochs": 4}})
    assert config.sources["a"].paths == ("x/*.jsonl",)
    assert config.mix.budget_tokens == 2e9


@pytest.mark.parametrize(
    "data, message",
    [
        ({"sourcez": {}}, "unknown key sourcez"),
        ({"spark": {"mastr": "x"}}, "unknown key spark.mastr"),
        ({"sources": {"a": {}}}, "missing key sources.a.paths"),
        ({"sources": {"a": {"paths": []}}}, "sources.a.paths: expected a non-empty list"),
        ({"spark": {"partitions": "many"}}, "spark.partitions: expected a number"),
        ({"spark": {"partitions": 1.5}}, "spark.partitions: expected a whole number"),
        ({"spark": {"concurrent_sources": 0}}, "spark.concurrent_sources must be an integer >= 1"),
        ({"ingest": {"max_doc_bytes": -1}}, "ingest.max_doc_bytes must be > 0"),
        ({"spark": "local"}, "spark: expected a mapping"),
        ({"sources": {"a b": {"paths": "x"}}}, "source name 'a b'"),
        ({"mix": {"max_epochs": 0}}, "mix.max_epochs must be > 0"),
        ({"seed": True}, "seed: expected a finite number"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_config(data)


def test_overrides_parse_as_yaml():
    data = apply_overrides(BASE, ["spark.master=local[2]", "mix.budget_tokens=1000", "out=o"])
    config = parse_config(data)
    assert config.spark.master == "local[2]" and config.mix.budget_tokens == 1000 and config.out == "o"
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides(BASE, ["novalue"])


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(listy)


def test_demo_config_parses():
    from pathlib import Path

    config = load_config(Path(__file__).parents[1] / "configs" / "demo.yaml")
    assert len(config.sources) >= 8
    assert config.to_dict()["sources"]
