"""``mixweave study``: proxy models per candidate mixture x order x seed of a run config's study section."""

from __future__ import annotations

from pathlib import Path

import click

from .common import config_options, load_run_config, run_configured_stage


@click.command("study")
@click.argument("config_arg", metavar="[CONFIG]", required=False, type=click.Path(dir_okay=False))
@config_options
@click.option("--out", help="The run folder (default: the config's out).")
@click.option("--force", is_flag=True, help="Re-run the study stage (finished proxy runs in study.work/ are reused).")
def command(config_arg, config_path, overrides, out, force):
    """Train a proxy per candidate mixture x order x seed; write study.parquet, study.json and charts."""
    import json

    from ..errors import ConfigError

    if bool(config_arg) == bool(config_path):
        raise ConfigError("give the run config once: mixweave study CONFIG (or --config CONFIG), a run config with "
                          "a study section such as configs/study.yaml")
    config_path = config_arg or config_path
    config = load_run_config(config_path, overrides, None, out)
    if config.study is None:
        raise ConfigError(f"{config_path} has no study section; add one (see configs/study.yaml) or --set it")
    run_configured_stage(config, "study", force=force)
    folder = Path(config.out) / "study"
    doc = json.loads((folder / "study.json").read_text())
    print_study_table(doc)
    click.echo(f"wrote {folder / 'study.parquet'}, {folder / 'study.json'} and charts in {folder}")


def print_study_table(doc: dict) -> None:
    from ..pipeline.study import KEY_METRICS, study_table_rows

    headers = ["candidate", "order", *KEY_METRICS, *(f"d {m} vs {doc['baseline']}" for m in KEY_METRICS)]
    rows = study_table_rows(doc)
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for r in [headers, *rows]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    click.echo(doc["note"])
    click.echo(f"total training compute {doc['flops']['total']:.3g} FLOPs over {len(doc['runs'])} proxy runs")
