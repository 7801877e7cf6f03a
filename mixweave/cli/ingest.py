"""``mixweave ingest``: read sources into docs/ + quarantine/, from a run config or from flags."""

from __future__ import annotations

from pathlib import Path

import click

from .common import config_options, load_run_config, print_reports, refuse_flags_with_config, run_configured_stage


@click.command("ingest")
@config_options
@click.option("--source", "sources", multiple=True, metavar="NAME=GLOB",
              help="Without --config: a source and a glob of its files (repeatable; repeat a NAME to add globs).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Without --config: writes OUT/docs, OUT/quarantine, OUT/_manifest.json.")
@click.option("--text-field", default="text", show_default=True, help="JSON/parquet field holding the text.")
@click.option("--id-field", default="id", show_default=True, help="Field holding the document id (optional in the data).")
@click.option("--tokenizer", default="default", show_default=True,
              help="'default' (GPT-2 BPE), a tokenizer.json or a .tiktoken file.")
@click.option("--max-doc-bytes", default=10_000_000, show_default=True, type=int)
@click.option("--master", help="Spark master URL (default local[*], or the config's spark.master).")
@click.option("--force", is_flag=True, help="Re-run even when the output is up to date.")
def command(config_path, overrides, sources, out, text_field, id_field, tokenizer, max_doc_bytes, master, force):
    """Ingest sources: the ingest stage of --config, or the sources given with --source."""
    from ..pipeline.config import parse_config
    from ..data.manifest import read_manifest
    from ..errors import ConfigError
    from ..pipeline.runner import run_stages
    from ..pipeline.stages import build_stages

    refuse_flags_with_config(config_path, source=sources, out=out)
    if config_path:
        config = load_run_config(config_path, overrides, master)
        run_configured_stage(config, "ingest", force=force)
        artifact = Path(config.out) / "ingest"
    else:
        if not sources or not out:
            raise ConfigError("give --config CONFIG, or --source NAME=GLOB (repeatable) and --out DIR")
        by_name: dict[str, list[str]] = {}
        for item in sources:
            if "=" not in item:
                raise ConfigError(f"--source {item!r}: write it as NAME=GLOB, e.g. --source web='data/web/*.jsonl'")
            name, pattern = item.split("=", 1)
            by_name.setdefault(name.strip(), []).append(pattern)
        raw = {
            "out": str(Path(out).parent),
            "spark": {"master": master or "local[*]"},
            "tokenizer": {"path": tokenizer},
            "sources": {n: {"paths": p, "text_field": text_field, "id_field": id_field} for n, p in by_name.items()},
            "ingest": {"max_doc_bytes": max_doc_bytes},
        }
        config = parse_config(raw)
        artifact = Path(out)
        print_reports(run_stages(build_stages(), config, wanted=["ingest"], force=force,
                                 overrides={"ingest": artifact}))
    manifest = read_manifest(artifact)
    click.echo(f"{'source':<16}{'input':>9}{'kept':>9}{'quarantined':>13}{'tokens':>13}  reasons")
    for name, s in manifest["sources"].items():
        reasons = ", ".join(f"{k}={v}" for k, v in s["quarantine_reasons"].items()) or "-"
        click.echo(f"{name:<16}{s['n_input']:>9,}{s['n_docs']:>9,}{s['n_quarantined']:>13,}{s['n_tokens']:>13,}  {reasons}")
