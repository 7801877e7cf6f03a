"""Bad input across the CLI: every case prints exactly one ``error:`` line, exits non-zero, and
shows no traceback; inputs are never modified. Cases run in-process through ``mixweave.cli.main``
(what the console script calls); ``test_cli.py`` checks the same contract in real subprocesses."""

from __future__ import annotations

import json
import math
from pathlib import Path

from cli_helpers import run_cli

CORPUS = Path(__file__).parent / "data" / "corpus"




def stats_file(tmp: Path, tokens: dict[str, float]) -> Path:
    stats = {"schema_version": 1,
             "tokenizer": {"name": "gpt2", "path": "x", "sha256": "0" * 64, "vocab_size": 50257, "eos_id": 50256, "dtype": "uint16"},
             "sources": {n: {"n_docs": 10, "n_tokens": t, "n_bytes": 100, "paths": [f"{n}/*.jsonl"]} for n, t in tokens.items()}}
    path = tmp / "stats.json"
    path.write_text(json.dumps(stats))
    return path


def config_file(tmp: Path, text: str) -> Path:
    path = tmp / f"c{len(list(tmp.glob('c*.yaml')))}.yaml"
    path.write_text(text)
    return path


GOOD_SOURCES = f"sources: {{books: {{paths: ['{CORPUS}/books/*.jsonl']}}}}\n"
# 1 KB whose aliases expand to 9^7 (4.8 million) values
ALIAS_BOMB = "mix:\n  method: unimax\n  params:\n    x0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"    x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 7))


def _cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    stats = stats_file(tmp, {"web": 1_000_000, "code": 50_000})
    util_missing = tmp / "util.csv"
    util_missing.write_text("source,benchmark,score\nweb,humaneval,0.5\n")
    bad_tok = tmp / "tokenizer.json"
    bad_tok.write_text("not a tokenizer")
    not_json = tmp / "stats-broken.json"
    not_json.write_text("{oops")
    foreign = tmp / "notes"  # a folder the user owns: no stage may delete or replace it
    foreign.mkdir(exist_ok=True)
    (foreign / "notes.txt").write_text("mine")
    c = lambda text: str(config_file(tmp, text))  # noqa: E731
    return {
        "missing config": (["run", str(tmp / "absent.yaml")], "does not exist"),
        "config not yaml": (["run", c("sources: [unclosed\n")], "not valid YAML"),
        "config is a list": (["run", c("- a\n- b\n")], "must hold a mapping"),
        "unknown key": (["run", c(GOOD_SOURCES + "colour: blue\n")], "unknown key colour"),
        "unknown nested key": (["run", c(GOOD_SOURCES + "order: {kk: 3}\n")], "unknown key order.kk"),
        "wrong type": (["run", c(GOOD_SOURCES + "spark: {partitions: lots}\n")], "spark.partitions"),
        "negative size": (["run", c(GOOD_SOURCES + "ingest: {max_doc_bytes: -5}\n")], "max_doc_bytes must be > 0"),
        "set without equals": (["run", c(GOOD_SOURCES), "--set", "mix.method"], "key.sub=value"),
        "unknown stage": (["run", c(GOOD_SOURCES + f"out: {tmp}/o\n"), "--stage", "teleport"], "unknown stage"),
        "glob matches nothing": (["run", c(f"out: {tmp}/o\nsources: {{a: {{paths: ['{tmp}/none/*.jsonl']}}}}\n")], "matches no file"),
        "bad source name": (["run", c("sources: {'a b': {paths: [x]}}\n")], "source name"),
        "unreadable tokenizer": (["run", c(GOOD_SOURCES + f"out: {tmp}/o\ntokenizer: {{path: {bad_tok}}}\n")], "cannot read tokenizer"),
        "missing tokenizer": (["run", c(GOOD_SOURCES + f"out: {tmp}/o\ntokenizer: {{path: /nope/tok.json}}\n")], "does not exist"),
        "dedup threshold out of range": (["run", c(GOOD_SOURCES + "order: {dedup_cosine: 2}\n")], "dedup_cosine"),
        "unknown knn method": (["run", c(GOOD_SOURCES + "order: {knn_method: magic}\n")], "knn_method"),
        "medu without model": (["run", c(GOOD_SOURCES + "benchmarks: b.jsonl\nutility: {method: medu}\n")], "utility.model"),
        "table without path": (["run", c(GOOD_SOURCES + "utility: {method: table}\n")], "utility.table"),
        "utility without benchmarks": (["run", c(GOOD_SOURCES + "utility: {method: embedding}\n")], "benchmarks"),
        "unknown export format": (["run", c(GOOD_SOURCES + "order: {}\nmix: {}\nexport: {formats: [tfrecord]}\n")], "unknown format"),
        "export without mix": (["run", c(GOOD_SOURCES + "order: {}\nexport: {formats: [megatron]}\n")], "need both"),
        "infeasible budget": (["mix", "--stats", str(stats), "--method", "unimax", "--budget-tokens", "1e9", "--out", str(tmp / "m")], "at most 4,200,000"),
        "temperature without tau": (["mix", "--stats", str(stats), "--method", "temperature", "--out", str(tmp / "m")], "tau"),
        "unknown method": (["mix", "--stats", str(stats), "--method", "vibes", "--out", str(tmp / "m")], "vibes"),
        "stats not json": (["mix", "--stats", str(not_json), "--method", "unimax", "--out", str(tmp / "m")], "cannot read"),
        "utilimax without utility": (["mix", "--stats", str(stats), "--method", "utilimax", "--out", str(tmp / "m")], "utility"),
        "utility table missing a source": (["mix", "--stats", str(stats), "--method", "utilimax", "--utility", str(util_missing), "--out", str(tmp / "m")], "code"),
        "manual weights do not parse": (["mix", "--stats", str(stats), "--method", "manual", "--param", "weights=lots", "--out", str(tmp / "m")], "weights"),
        "zero-token source": (["mix", "--stats", str(stats_file(tmp / "z", {"web": 1000, "empty": 0})), "--method", "unimax", "--out", str(tmp / "m")], "empty"),
        "config and stats together": (["mix", "--config", c(GOOD_SOURCES), "--stats", str(stats)], "exactly one"),
        "verify without manifest": (["verify", str(tmp)], "has no _manifest.json"),
        "source without equals": (["ingest", "--source", "web", "--out", str(tmp / "o")], "NAME=GLOB"),
        "utility table absent": (["utility", "--method", "table", "--table", str(tmp / "none.parquet"), "--out", str(tmp / "u")], "does not exist"),
        "utility table flag missing": (["utility", "--method", "table", "--out", str(tmp / "u")], "--table"),
        "report without run": (["report", "--config", c(GOOD_SOURCES + f"out: {tmp}/never\n")], "does not exist"),
        # config validated whole before any stage runs (hardening issue)
        "source key written twice": (["run", c(f"sources: {{a: {{paths: [x]}}, a: {{paths: [y]}}}}\n")], "written twice"),
        "yaml alias bomb": (["run", c(GOOD_SOURCES + ALIAS_BOMB)], "aliases"),
        "python tag in --param": (["mix", "--stats", str(stats), "--method", "temperature", "--param",
                                   "tau=!!python/object/apply:os.system [ls]", "--out", str(tmp / "m")], "not valid yaml"),
        "bad yaml in --param": (["mix", "--stats", str(stats), "--method", "temperature", "--param", "tau=[1",
                                 "--out", str(tmp / "m")], "not valid yaml"),
        "typo in --param": (["mix", "--stats", str(stats), "--method", "temperature", "--param", "tua=2",
                             "--out", str(tmp / "m")], "tua"),
        "typo in --param with --config": (["mix", "--config", c(GOOD_SOURCES + f"out: {tmp}/o\n"), "--method",
                                           "temperature", "--param", "tua=2"], "mix.params.tua"),
        "empty out": (["run", c(GOOD_SOURCES), "--set", "out="], "out is empty"),
        "budget below one token": (["run", c(GOOD_SOURCES + "mix: {budget_tokens: 1.0e-9}\n")], "budget_tokens"),
        "zero target file size": (["run", c(GOOD_SOURCES + "ingest: {target_file_mb: 0}\n")], "target_file_mb"),
        "bad spark master": (["run", c(GOOD_SOURCES + "spark: {master: 'lcoal[2]'}\n")], "spark.master"),
        "bad driver memory": (["run", c(GOOD_SOURCES + "spark: {driver_memory: lots}\n")], "driver_memory"),
        "unknown mix method": (["run", c(GOOD_SOURCES + "mix: {method: vibes}\n")], "mix.method"),
        "typo in mix.params": (["run", c(GOOD_SOURCES + "mix: {method: temperature, params: {tua: 0.7}}\n")], "mix.params.tua"),
        "wrong type in mix.params": (["run", c(GOOD_SOURCES + "mix: {method: utilimax, params: {lam: high}}\n")], "mix.params.lam"),
        "typo in utility": (["run", c(GOOD_SOURCES + "benchmarks: b.jsonl\nutility: {topk: 3}\n")], "utility.topk"),
        "medu temperature out of range": (["run", c(GOOD_SOURCES + "benchmarks: b.jsonl\nutility: {method: medu, model: m, "
                                                      "temperature: 5}\n")], "temperature must be in [0, 2]"),
        "unknown backend option": (["run", c(GOOD_SOURCES + "benchmarks: b.jsonl\nutility: {method: medu, model: m, "
                                               "backend: openai, backend_options: {base_ulr: x}}\n")],
                                   "utility.backend_options.base_ulr"),
        "typo in train": (["run", c(GOOD_SOURCES + "order: {}\nmix: {}\ntrain: {learning_rate: 0.1}\n")],
                          "train.learning_rate"),
        "wrong type in train": (["run", c(GOOD_SOURCES + "order: {}\nmix: {}\ntrain: {lr: fast}\n")], "train.lr"),
        # names are path components
        "source named ..": (["run", c("sources: {'..': {paths: [x]}}\n")], "source name '..'"),
        "source name with a slash": (["run", c("sources: {'a/b': {paths: [x]}}\n")], "source name 'a/b'"),
        "hidden source name": (["run", c("sources: {'.git': {paths: [x]}}\n")], "source name '.git'"),
        "ingest source named ..": (["ingest", "--source", f"..={CORPUS}/books/*.jsonl", "--out", str(tmp / "o")], "source name"),
        # never delete or overwrite what mixweave did not create
        "ingest --out on a foreign folder": (["ingest", "--source", f"books={CORPUS}/books/*.jsonl", "--out",
                                              str(foreign)], "did not write"),
        "utility --out on a foreign folder": (["utility", "--method", "table", "--table", str(util_missing), "--out",
                                               str(foreign)], "did not write"),
        "run out is a file": (["run", c(GOOD_SOURCES + f"out: {foreign / 'notes.txt'}\n"), "--stage", "ingest"], "not a folder"),
    }




def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "z").mkdir()
            names = list(_cases(Path(tmp)))
        metafunc.parametrize("case", names)


def test_bad_request(case, tmp_path, capsys):
    (tmp_path / "z").mkdir()
    args, fragment = _cases(tmp_path)[case]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    code, out, err = run_cli(args, capsys)
    assert code not in (0, None), (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert fragment.lower() in lines[0].lower(), lines[0]
    assert not lines[0].startswith("error: internal")
    for path, mtime in before.items():  # nothing the user gave was altered or removed
        assert path.is_file() and path.stat().st_mtime_ns == mtime


def test_tampered_artifact_and_escaping_manifest(tmp_path, capsys):
    from mixweave.pipeline.config import parse_config
    from mixweave.pipeline.runner import Stage, StageResult, run_stages

    def produce(ctx, tmp):
        (tmp / "data.txt").write_text("payload")
        return StageResult()

    run_stages({"s": Stage("s", (), 1, lambda c: {}, produce)}, parse_config({"out": str(tmp_path / "run")}))
    artifact = tmp_path / "run" / "s"
    code, out, _ = run_cli(["verify", str(artifact)], capsys)
    assert code == 0 and "ok" in out
    (artifact / "data.txt").write_text("tampered")
    code, _, err = run_cli(["verify", str(artifact)], capsys)
    assert code == 2 and err.count("error:") == 1 and "altered" in err
    manifest = json.loads((artifact / "_manifest.json").read_text())
    manifest["files"] = [{"path": "../../../etc/passwd", "bytes": 1, "sha256": "0" * 64}]
    (artifact / "_manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(["verify", str(artifact)], capsys)
    assert code == 2 and "escapes" in err and "Traceback" not in err


def test_nan_counts_in_stats(tmp_path, capsys):
    stats = stats_file(tmp_path, {"web": 1000, "code": math.nan})
    text = stats.read_text().replace("NaN", "NaN")
    stats.write_text(text)
    code, _, err = run_cli(["mix", "--stats", str(stats), "--method", "unimax", "--out", str(tmp_path / "m")], capsys)
    assert code == 2 and err.count("error:") == 1 and "code" in err
