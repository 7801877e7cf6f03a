"""Regression tests for the hardening issue: the commit helper, folder locks, names, stage inputs
checked against their manifests, per-source seeds, tiny sources and Ctrl-C. The CLI's one-line
error cases live in test_cli_bad_input.py; this file holds what needs a real run or a process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli
from conftest import FAST_JVM, NO_CODEGEN

from mixweave.data.manifest import (
    MANIFEST_NAME,
    atomic_stage_dir,
    hold_folder,
    list_output_files,
    read_manifest,
    verify_stage,
    write_json_atomic,
)
from mixweave.data.mixture_manifest import read_mixture_manifest
from mixweave.data.windows import read_windows
from mixweave.errors import ConfigError, InputError, ManifestError
from mixweave.pipeline.config import load_config, parse_config
from mixweave.pipeline.runner import (
    Stage,
    StageContext,
    StageResult,
    run_stage,
    run_stages,
)
from mixweave.pipeline.stages import build_stages
from mixweave.retrieval.pack import source_seed

CORPUS = Path(__file__).parent / "data" / "corpus"




# ------------------------------------------------------------------------------- commit helper
def test_an_output_naming_the_temporary_folder_is_refused(tmp_path):
    with pytest.raises(ManifestError, match="names the stage's temporary folder"):
        with atomic_stage_dir(tmp_path / "export") as tmp:
            (tmp / "data_path.txt").write_text(f"1.0 {tmp}/megatron/web\n")
            write_json_atomic(tmp / MANIFEST_NAME, {"stage": "x", "files": list_output_files(tmp)})
    assert not (tmp_path / "export").exists() and not list(tmp_path.glob(".export.tmp-*"))


def test_the_search_spans_read_blocks(tmp_path):
    tmp = tmp_path / ".s.tmp-0123456789ab"
    tmp.mkdir()
    (tmp / "big.bin").write_bytes(b"x" * ((1 << 20) - 5) + tmp.name.encode())  # straddles the 1 MiB block edge
    with pytest.raises(ManifestError, match="big.bin"):
        list_output_files(tmp)


def test_a_symlink_in_an_output_is_refused(tmp_path):
    tmp = tmp_path / ".s.tmp-0123456789ab"
    tmp.mkdir()
    (tmp_path / "outside.txt").write_text("x")
    (tmp / "link.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(ManifestError, match="symbolic link"):
        list_output_files(tmp)


def _toy_stage(ctx, tmp):
    (tmp / "data.txt").write_text("payload")
    return StageResult()


def test_a_second_writer_of_a_run_folder_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom mixweave.data.manifest import hold_folder\n"
         f"with hold_folder({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (out / ".s.tmp-othersrun").mkdir()  # the other run's temporary folder
        with pytest.raises(ManifestError, match="another mixweave process"):
            run_stages({"s": Stage("s", (), 1, lambda c: {}, _toy_stage)}, parse_config({"out": str(out)}))
        assert (out / ".s.tmp-othersrun").is_dir()  # not deleted
    finally:
        holder.kill()
        holder.wait()
    run_stages({"s": Stage("s", (), 1, lambda c: {}, _toy_stage)}, parse_config({"out": str(out)}))
    assert (out / "s" / "data.txt").read_text() == "payload"


def test_the_folder_lock_is_reentrant_in_one_process(tmp_path):
    with hold_folder(tmp_path), hold_folder(tmp_path):
        with atomic_stage_dir(tmp_path / "a") as tmp:
            write_json_atomic(tmp / MANIFEST_NAME, {"stage": "a", "files": []})
    assert read_manifest(tmp_path / "a") is not None


def test_verify_flags_a_file_added_after_the_stage(tmp_path):
    run_stages({"s": Stage("s", (), 1, lambda c: {}, _toy_stage)}, parse_config({"out": str(tmp_path)}))
    verify_stage(tmp_path / "s")
    (tmp_path / "s" / "extra.parquet").write_bytes(b"PAR1")
    with pytest.raises(ManifestError, match="extra.parquet is not listed"):
        verify_stage(tmp_path / "s")


def test_a_stage_never_replaces_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "notes.txt").write_text("mine")
    with pytest.raises(ManifestError, match="did not write"):
        run_stages({"s": Stage("s", (), 1, lambda c: {}, _toy_stage)}, parse_config({"out": str(tmp_path)}))
    assert (tmp_path / "s" / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------------------- names
def test_a_mixture_naming_a_path_is_refused(tmp_path):
    from mixweave.pipeline.stages.mix import solve_and_write_mixture

    stats = {"schema_version": 1, "sources": {n: {"n_docs": 10, "n_tokens": t, "n_bytes": 100, "paths": [n]}
                                              for n, t in (("web", 1000), ("code", 500))},
             "tokenizer": {"name": "gpt2", "path": "x", "sha256": "0" * 64, "vocab_size": 50257, "eos_id": 50256,
                           "dtype": "uint16"}}
    solve_and_write_mixture(tmp_path / "m", stats, method="uniform", budget_tokens=0, max_epochs=4)
    path = tmp_path / "m" / "mixture.json"
    manifest = json.loads(path.read_text())
    manifest["sources"][0]["name"] = "../../escape"
    path.write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="source name '../../escape'"):
        read_mixture_manifest(path)


def test_numbers_without_a_dot_are_numbers(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"sources: {{books: {{paths: ['{CORPUS}/books/*.jsonl']}}}}\n"
                      "mix: {method: temperature, budget_tokens: 2e9, params: {tau: 1e1}}\n")
    loaded = load_config(config)
    assert loaded.mix.params.tau == 10.0 and loaded.mix.budget_tokens == 2e9


def test_source_seed_depends_on_the_name_only():
    assert source_seed(0, "web") == source_seed(0, "web")
    assert len({source_seed(0, n) for n in ("web", "code", "books")}) == 3
    assert source_seed(1, "web") != source_seed(0, "web")


# ------------------------------------------------------------------------------ through a run
# ``small_runs`` (tests/conftest.py): ``reference`` = books + code + web (30 documents each) through
# mix, ``two`` = code + web through mix, with the same settings.


def test_adding_a_source_does_not_reshuffle_the_others(small_runs):
    two, three = small_runs.two, small_runs.reference
    for source in ("code", "web"):  # 'books' sorts first: an index-based seed would move both
        assert np.array_equal(read_windows(two / "pack", source), read_windows(three / "pack", source)), source


def test_mix_with_config_applies_max_epochs_and_params(small_runs, capsys, tmp_path):
    two = tmp_path / "two"  # a copy: the shared run stays as it is
    shutil.copytree(small_runs.two, two)
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps(small_runs.config_data(two, {n: small_runs.globs[n] for n in ("code", "web")})))
    code, out, err = run_cli(["mix", "--config", str(config), "--method", "temperature", "--param", "tau=2",
                              "--max-epochs", "7"], capsys)
    assert code in (0, None), err
    mixture = read_mixture_manifest(two / "mix" / "mixture.json")
    assert mixture["method"]["name"] == "temperature" and mixture["method"]["params"]["tau"] == 2.0
    assert {s["max_epochs"] for s in mixture["sources"]} == {7.0}


def test_a_hand_edited_stats_file_is_not_mixed(small_runs, tmp_path):
    two = tmp_path / "two"  # a copy: the shared run stays as it is
    shutil.copytree(small_runs.two, two)
    stats_path = two / "count" / "stats.json"
    stats = json.loads(stats_path.read_text())
    stats["sources"]["web"]["n_tokens"] *= 10
    stats_path.write_text(json.dumps(stats))
    config = small_runs.config(two, {n: small_runs.globs[n] for n in ("code", "web")})
    with pytest.raises(ManifestError, match="changed after its stage wrote it"):
        run_stage(build_stages()["mix"], StageContext(config=config, out=two), force=True)


def test_a_source_too_small_for_one_window_is_explained(small_runs, tmp_path):
    tiny = small_runs.subset(tmp_path / "data", "tiny", 3, short=True)
    config = small_runs.config(tmp_path / "tiny-run", {"code": small_runs.globs["code"], "tiny": tiny})
    with pytest.raises(ConfigError, match=r"source tiny: its \d+ documents .* fewer than one window of 128 tokens"):
        run_stages(build_stages(), config, wanted=["mix"])


def test_a_run_does_not_read_its_own_output(small_runs, tmp_path):
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    nest = tmp_path / "nest"
    small_runs.subset(nest, "web", 10)
    pq.write_table(pj.read_json(nest / "web" / "part.jsonl"), nest / "web" / "part.parquet")
    (nest / "web" / "part.jsonl").unlink()
    # the run's out lies under the source's glob, and ingest writes parquet there
    config = parse_config({"out": str(nest / "out"), "sources": {"web": {"paths": [str(nest / "**" / "*.parquet")]}},
                           "ingest": {"target_file_mb": 1}})
    counts = []
    for _ in range(2):
        run_stages(build_stages(), config, wanted=["ingest"], force=True)
        counts.append(read_manifest(nest / "out" / "ingest")["counts"]["n_docs"])
    assert counts == [10, 10]


# ----------------------------------------------------------------------------------------- Ctrl-C
SITE_SHUFFLE_PARTITIONS = 5
"""spark-defaults.conf's ``spark.sql.shuffle.partitions`` in the Ctrl-C run: it must win over mixweave's
default (8)."""


@pytest.mark.spark
def test_ctrl_c_prints_one_line_and_no_traceback(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"out: {tmp_path / 'out'}\nsources: {{books: {{paths: ['{CORPUS}/books/*.jsonl']}}}}\n"
                      "order: {max_tokens: 32}\ningest: {distributed_min_mb: 0}\n"  # ingest as a Spark job
                      f"spark: {{conf: {json.dumps({**FAST_JVM, **NO_CODEGEN})}}}\n")  # the tests' JVM settings
    site = tmp_path / "spark-conf"  # a local launch reads the install's spark-defaults.conf ($SPARK_CONF_DIR)
    site.mkdir()
    (site / "spark-defaults.conf").write_text(f"spark.sql.shuffle.partitions {SITE_SHUFFLE_PARTITIONS}\n")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_CONF_DIR": str(site)}
    proc = subprocess.Popen([sys.executable, "-m", "mixweave.cli", "run", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    seen = ""
    while "spark session" not in seen and time.monotonic() < deadline and proc.poll() is None:
        seen += proc.stderr.readline()
    while not list((tmp_path / "out").glob(".ingest.tmp-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)  # interrupted inside a stage: its temporary folder exists
    assert list((tmp_path / "out").glob(".ingest.tmp-*")), seen
    assert f"shuffle partitions={SITE_SHUFFLE_PARTITIONS}" in seen, seen  # spark-defaults.conf's, over our 8
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    err = seen + err
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: interrupted; run the same command again to resume (finished stages are kept)"]
    assert not list((tmp_path / "out").glob(".*.tmp-*"))


def test_a_file_added_into_an_artifact_is_not_read(small_runs, tmp_path):
    from mixweave.utility.sampling import resolve_docs_paths

    ingest = tmp_path / "ingest"
    shutil.copytree(small_runs.two / "ingest", ingest)
    listed = resolve_docs_paths(ingest)
    intruder = ingest / "docs" / "web" / "part-99999.parquet"
    shutil.copy(listed[0], intruder)
    assert resolve_docs_paths(ingest) == listed and str(intruder) not in listed
    with pytest.raises(ManifestError, match="part-99999.parquet is not listed"):
        verify_stage(ingest)


def test_ctrl_c_surfacing_as_a_gateway_error_is_reported_as_interrupted(capsys, monkeypatch):
    """PySpark's SIGINT handler cancels jobs through the py4j gateway; when the gateway is gone it
    raises a Py4JError instead of KeyboardInterrupt (seen once in CI). With the handler chained by
    ``errors.Interrupt`` (as ``jobs.spark.get_spark`` does) the CLI still prints the interrupted line
    and exits 130, not "internal error"."""
    import click

    from mixweave import cli as cli_module
    from mixweave.errors import Interrupt

    def pyspark_like_handler(signum, frame):
        raise RuntimeError("Gateway must be connected to send cancel cmd")

    previous = signal.signal(signal.SIGINT, pyspark_like_handler)
    monkeypatch.setattr(Interrupt, "received", False)

    @click.command("interrupt-me")
    def interrupt_me():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)

    cli_module.cli.add_command(interrupt_me)
    try:
        Interrupt.chain()
        Interrupt.chain()  # idempotent: one flagging wrapper
        with pytest.raises(SystemExit) as exit_info:
            cli_module.main(["interrupt-me"])
    finally:
        signal.signal(signal.SIGINT, previous)
        cli_module.cli.commands.pop("interrupt-me", None)
    assert exit_info.value.code == 130
    err = capsys.readouterr().err
    assert err.startswith("error: interrupted") and "internal error" not in err


def test_ctrl_c_swallowed_in_a_finalizer_still_stops_the_run_quietly(tmp_path, capsys, monkeypatch):
    """A SIGINT whose KeyboardInterrupt is raised inside a finalizer (py4j's weakref callbacks; seen in
    CI: "Exception ignored in ...", then the run went on to commit ingest and run every stage) is
    recorded by the CLI's unraisable hook without a traceback, and the runner stops at the next stage
    boundary with KeyboardInterrupt, committing nothing."""
    import sys

    from mixweave.errors import Interrupt
    from mixweave.pipeline.config import parse_config
    from mixweave.pipeline.runner import run_stages
    from mixweave.pipeline.stages import build_stages

    monkeypatch.setattr(Interrupt, "received", False)

    class Finalized:
        def __del__(self):
            raise KeyboardInterrupt

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", Interrupt.unraisable(seen.append))
    Finalized()  # collected at once: the KeyboardInterrupt goes to the unraisable hook
    assert Interrupt.received and seen == [] and "Traceback" not in capsys.readouterr().err
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "a.jsonl").write_text('{"text": "a document"}\n')
    config = parse_config({"out": str(tmp_path / "out"), "sources": {"web": {"paths": [str(tmp_path / "web" / "*.jsonl")]}}})
    with pytest.raises(KeyboardInterrupt):
        run_stages(build_stages(), config, wanted=["ingest"])
    assert not (tmp_path / "out" / "ingest").exists()
