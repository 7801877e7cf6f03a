"""``mixweave run``: every stage of a run config in dependency order; finished stages are skipped."""

from __future__ import annotations

from pathlib import Path

import click

from .common import load_run_config, print_mixture_table, print_reports, print_stats_table


@click.command("run")
@click.argument("config_arg", metavar="[CONFIG]", required=False, type=click.Path(dir_okay=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Run config (YAML); or give it as CONFIG.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
@click.option("--master", help="Spark master URL (overrides spark.master).")
@click.option("--out", help="Output folder (overrides out).")
@click.option("--stage", "stages", multiple=True, help="Run only these stages (and what they need).")
@click.option("--force", is_flag=True, help="Re-run the stages named with --stage (or all) even when up to date.")
def command(config_arg, config_path, overrides, master, out, stages, force):
    """Run every stage of CONFIG in dependency order; finished stages are skipped."""
    from ..data.artifacts import load_stats
    from ..errors import ConfigError
    from ..pipeline.runner import run_stages
    from ..pipeline.stages import build_stages

    if bool(config_arg) == bool(config_path):
        raise ConfigError("give the run config once: mixweave run CONFIG (or --config CONFIG)")
    config_path = config_arg or config_path
    config = load_run_config(config_path, overrides, master, out)
    click.echo(f"mixweave run: {config_path} -> {config.out}", err=True)
    reports = run_stages(build_stages(), config, wanted=list(stages) or None, force=force,
                         on_report=lambda r: print_reports([r]))
    count_dir = Path(config.out) / "count"
    if any(r.name == "count" for r in reports):
        click.echo(f"\nper-source statistics ({count_dir / 'stats.json'}):")
        print_stats_table(load_stats(count_dir))
    mixture = Path(config.out) / "mix" / "mixture.json"
    if any(r.name == "mix" and r.status != "disabled" for r in reports) and mixture.is_file():
        from ..data.mixture_manifest import read_mixture_manifest

        click.echo("")
        print_mixture_table(read_mixture_manifest(mixture))
    if not stages:
        from ..pipeline.report import write_report

        report = write_report(config.out, Path(config.out) / "report.html", utility_path=utility_path(config))
        click.echo(f"\nreport: {report.resolve()}")
    click.echo(f"results: {Path(config.out).resolve()}")


def utility_path(config):
    """mix.utility when the config names a table; else the report finds OUT/utility itself."""
    if config.mix is not None and config.mix.utility:
        return config.mix.utility
    return None
