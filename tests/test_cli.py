"""CLI: --help, exit codes, one-line errors and never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def mixweave(*args: str, cwd: Path | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("MIXWEAVE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "mixweave.cli", *args], capture_output=True, text=True, cwd=cwd or ROOT,
        env=env, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str, code: int = 2) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert fragment in errors[0], errors[0]


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["ingest", "--help"], ["verify", "--help"], ["corpus", "--help"]])
def test_help(args):
    result = mixweave(*args)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_version():
    result = mixweave("--version")
    assert result.returncode == 0 and "mixweave" in result.stdout


def test_missing_config(tmp_path):
    assert_one_line_error(mixweave("run", str(tmp_path / "nope.yaml")), "does not exist")


def test_unknown_config_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("sources: {a: {paths: ['x']}}\nmixx: {}\n")
    assert_one_line_error(mixweave("run", str(config)), "unknown key mixx")


def test_wrong_type_via_set(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("sources: {a: {paths: ['x']}}\n")
    assert_one_line_error(mixweave("run", str(config), "--set", "spark.partitions=lots"), "spark.partitions")


def test_glob_matching_nothing(tmp_path):
    result = mixweave("ingest", "--source", f"web={tmp_path}/none/*.jsonl", "--out", str(tmp_path / "o"))
    assert_one_line_error(result, "matches no file")
    assert not (tmp_path / "o").exists()


def test_source_without_equals(tmp_path):
    assert_one_line_error(mixweave("ingest", "--source", "web", "--out", str(tmp_path / "o")), "NAME=GLOB")


def test_unknown_stage(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"out: {tmp_path}/o\nsources: {{a: {{paths: ['x']}}}}\n")
    assert_one_line_error(mixweave("run", str(config), "--stage", "teleport"), "unknown stage 'teleport'")


def test_unreadable_tokenizer(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "hello"}\n')
    bad = tmp_path / "tokenizer.json"
    bad.write_text("garbage")
    result = mixweave("ingest", "--source", f"a={data}", "--out", str(tmp_path / "o"), "--tokenizer", str(bad))
    assert_one_line_error(result, "cannot read tokenizer")


def test_verify_missing_manifest(tmp_path):
    assert_one_line_error(mixweave("verify", str(tmp_path)), "has no _manifest.json")


def test_click_usage_error_has_no_traceback():
    result = mixweave("run", "--stage")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "requires an argument" in result.stderr
    assert_one_line_error(mixweave("run"), "give the run config once")
