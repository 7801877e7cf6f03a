"""A bad study section is one ConfigError line at load time (``mixweave study`` prints one error line)."""

from __future__ import annotations

import pytest
import yaml

from cli_helpers import run_cli
from mixweave.errors import ConfigError
from mixweave.pipeline.config import parse_config

BASE = {"out": "out/x", "sources": {"a": {"paths": ["a/*.jsonl"]}}, "order": {"seq_len": 64}, "mix": {}}
GOOD = [{"name": "unimax", "method": "unimax"}, {"name": "t333", "method": "temperature", "params": {"tau": 3.33}}]


def test_good_study_section_defaults():
    c = parse_config({**BASE, "study": {"candidates": GOOD}})
    assert c.study.baseline == "unimax" and c.study.seeds == 3 and c.study.orders == ("icp", "random")
    assert c.study.candidate("t333").solver_params() == {"tau": 3.33}


@pytest.mark.parametrize("study,words", [
    ({"candidates": [{"name": "x", "method": "magic"}]}, "unknown method 'magic'"),
    ({"candidates": GOOD, "baseline": "nope"}, "baseline 'nope' is not among the candidates"),
    ({"candidates": GOOD, "seeds": 0}, "study.seeds must be an integer >= 1"),
    ({"candidates": [{"name": "t", "method": "temperature", "params": {"tua": 3}}]}, "unknown key"),
    ({"candidates": [{"name": "t", "method": "temperature", "params": {"tau": 3}}]}, "no candidate uses method unimax"),
    ({"candidates": GOOD, "orders": ["icp", "shuffled"]}, "'shuffled' is not allowed"),
    ({"candidates": GOOD + [{"name": "unimax", "method": "uniform"}]}, "used twice"),
    ({"candidates": GOOD + [{"name": "u", "method": "utilimax"}]}, "need a utility table"),
])
def test_bad_study_section_is_one_config_error(study, words):
    with pytest.raises(ConfigError) as exc:
        parse_config({**BASE, "study": study})
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_study_needs_an_order_section():
    with pytest.raises(ConfigError, match="study needs an order section"):
        parse_config({**{k: v for k, v in BASE.items() if k != "order"}, "study": {"candidates": GOOD}})


def test_cli_bad_study_config_prints_one_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**BASE, "out": str(tmp_path / "out"),
                                    "study": {"candidates": GOOD, "baseline": "missing"}}))
    code, out, err = run_cli(["study", "--config", str(path)], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: study.baseline 'missing'"), err
    code, out, err = run_cli(["study", "--config", str(path), "--set", "study.baseline=unimax",
                              "--set", "study.seeds=0"], capsys)
    assert code == 2 and err.strip() == "error: study.seeds must be an integer >= 1, got 0 (3 or more for intervals)"
    code, out, err = run_cli(["study"], capsys)
    assert code == 2 and err.startswith("error: give the run config once") and err.count("\n") == 1
    path.write_text(yaml.safe_dump({**BASE, "out": str(tmp_path / "out")}))
    code, out, err = run_cli(["study", str(path)], capsys)
    assert code == 2 and "has no study section" in err and err.count("\n") == 1
