"""Every command that runs a stage takes ``--config`` and ``--set`` the same way: the stage commands
on one small run config, in the order a user would type them, through ``mixweave.cli.main``. Its 40
documents are below every Spark threshold: every stage runs in process and no JVM starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import run_cli

from mixweave.data.manifest import read_manifest, verify_stage
from mixweave.data.mixture_manifest import read_mixture_manifest

CORPUS = Path(__file__).parent / "data" / "corpus"


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli-config")
    sources = {}
    for name in ("code", "web"):
        lines = []
        for path in sorted((CORPUS / name).glob("*.jsonl")):
            lines.extend(path.read_text().splitlines())
        (root / name).mkdir()
        (root / name / "part.jsonl").write_text("\n".join(lines[:20]) + "\n")
        sources[name] = {"paths": [str(root / name / "*.jsonl")]}
    config = {"out": str(root / "run"), "seed": 1, "sources": sources,
              "benchmarks": str(CORPUS / "benchmarks.jsonl"),
              "order": {"k": 4, "seq_len": 128, "max_tokens": 32, "batch_size": 64},
              "utility": {"method": "embedding", "per_source": 4, "max_tokens": 32},
              "mix": {"method": "unimax", "max_epochs": 4},
              "export": {"formats": ["megatron"]},
              "train": {"depth": 1, "steps": 2, "batch_size": 2, "log_interval": 1, "holdout_windows": 0}}
    path = root / "run.yaml"
    path.write_text(json.dumps(config))
    return path


def test_stage_commands_take_config_and_set(config_file, capsys):
    out = Path(json.loads(config_file.read_text())["out"])
    code, stdout, err = run_cli(["ingest", "--config", str(config_file)], capsys)
    assert code == 0, err
    assert read_manifest(out / "ingest")["counts"]["n_docs"] == 40 and "code" in stdout

    code, stdout, err = run_cli(["utility", "--config", str(config_file)], capsys)
    assert code == 0, err
    assert (out / "utility" / "utility.parquet").is_file() and "humaneval" in stdout

    code, _, err = run_cli(["mix", "--config", str(config_file)], capsys)
    assert code == 0, err
    assert read_mixture_manifest(out / "mix" / "mixture.json")["method"]["name"] == "unimax"

    code, _, err = run_cli(["export", "--config", str(config_file), "--format", "olmo"], capsys)
    assert code == 0, err
    assert set(read_manifest(out / "export")["exports"]) == {"olmo"}

    code, _, err = run_cli(["train", "--config", str(config_file)], capsys)
    assert code == 0, err
    assert read_manifest(out / "train")["train"]["last_step"] == 2

    code, stdout, err = run_cli(["report", "--config", str(config_file)], capsys)
    assert code == 0, err
    assert (out / "report.html").is_file()

    # --set changes the mixture: mix and what reads it run again, everything upstream is up to date
    code, _, err = run_cli(["run", "--config", str(config_file), "--set", "mix.method=temperature",
                            "--set", "mix.params.tau=2", "--set", "train.steps=1"], capsys)
    assert code == 0, err
    status = {line.split()[0]: line.split()[1] for line in err.splitlines() if line.startswith("  ")}
    assert status == {"ingest": "skipped", "count": "skipped", "embed": "skipped", "knn": "skipped",
                      "dedup": "skipped", "order": "skipped", "pack": "skipped", "utility": "skipped",
                      "mix": "ran", "export": "ran", "train": "ran", "study": "disabled"}, status
    assert read_mixture_manifest(out / "mix" / "mixture.json")["method"]["params"]["tau"] == 2.0
    assert read_manifest(out / "train")["train"]["last_step"] == 1
    for stage in ("ingest", "utility", "mix", "export", "train"):
        verify_stage(out / stage)


def test_stand_alone_flags_clash_with_config(config_file, capsys):
    for args, flag in ((["export", "--config", str(config_file), "--out", "x"], "--out"),
                       (["train", "--config", str(config_file), "--pack", str(CORPUS)], "--pack"),
                       (["utility", "--config", str(config_file), "--docs", "x"], "--docs"),
                       (["ingest", "--config", str(config_file), "--source", "a=x"], "--source"),
                       (["run", str(config_file), "--config", str(config_file)], "once")):
        code, _, err = run_cli(args, capsys)
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(lines) == 1 and flag in lines[0], err
