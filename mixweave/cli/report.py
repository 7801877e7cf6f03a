"""``mixweave report``: OUT/report.html from the artifacts of a run (re-runs nothing)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import config_options, load_run_config


@click.command("report")
@config_options
@click.option("--out", help="Run folder (overrides out).")
def command(config_path, overrides, out):
    """Write OUT/report.html from the artifacts of a run (re-runs nothing)."""
    from ..errors import ConfigError
    from ..pipeline.report import write_report
    from .run import utility_path

    if not config_path:
        raise ConfigError("give --config CONFIG: the run whose artifacts the report shows")
    config = load_run_config(config_path, overrides, None, out)
    if not Path(config.out).is_dir():
        raise ConfigError(f"run folder {config.out} does not exist; run `mixweave run {config_path}` first")
    target = write_report(config.out, Path(config.out) / "report.html", utility_path=utility_path(config))
    click.echo(f"report: {target.resolve()}")
