"""What the commands share: loading the run config from flags, running one stage, printing tables."""

from __future__ import annotations

from typing import Callable

import click


def config_options(func: Callable) -> Callable:
    """``--config`` and ``--set``, the same on every command that runs a stage."""
    func = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                        help="Override a config key, e.g. mix.method=utilimax (repeatable, YAML-parsed).")(func)
    return click.option("--config", "config_path", type=click.Path(dir_okay=False),
                        help="Run config (YAML): the stage runs on that run's folders.")(func)


def load_run_config(config_path: str | None, overrides=(), master: str | None = None, out: str | None = None):
    """The run config of ``config_path`` (or an empty one) with ``--set``, ``--master`` and ``--out``
    applied, validated whole."""
    from ..pipeline.config import apply_overrides, load_raw, parse_config

    raw = load_raw(config_path) if config_path else {}
    extra = list(overrides)
    if master:
        extra.append(f"spark.master={master}")
    if out:
        extra.append(f"out={out}")
    return parse_config(apply_overrides(raw, extra))


def run_configured_stage(config, stage: str, *, force: bool = False):
    """Run ``stage`` of a run config (and whatever it needs that is not done yet); print the reports."""
    from ..pipeline.runner import run_stages
    from ..pipeline.stages import build_stages

    reports = run_stages(build_stages(), config, wanted=[stage], force=force)
    print_reports(reports)
    return reports


def refuse_flags_with_config(config_path: str | None, **flags) -> None:
    """With ``--config`` the run config says where inputs and outputs are: stand-alone flags clash."""
    from ..errors import ConfigError

    given = [name for name, value in flags.items() if value not in (None, (), False)]
    if config_path and given:
        flag = "--" + given[0].replace("_", "-")
        raise ConfigError(f"{flag} cannot be combined with --config: the run config names the stage's inputs "
                          "and outputs (change them with --set)")


def print_reports(reports) -> None:
    for report in reports:
        click.echo(f"  {report.name:<10} {report.status:<9} {report.seconds:7.1f}s  {report.path}", err=True)


def print_stats_table(stats: dict) -> None:
    """The per-source table that ``make demo`` ends with."""
    rows = stats["sources"]
    click.echo(f"{'source':<16}{'docs':>9}{'tokens':>13}{'MB':>9}{'tok/doc':>9}{'quarantined':>13}")
    for name in sorted(rows):
        s = rows[name]
        per_doc = s["n_tokens"] / s["n_docs"] if s["n_docs"] else 0
        click.echo(
            f"{name:<16}{s['n_docs']:>9,}{s['n_tokens']:>13,}{s['n_bytes'] / 1e6:>9.2f}{per_doc:>9.0f}{s['n_quarantined']:>13,}"
        )
    t = stats["totals"]
    click.echo(f"{'total':<16}{t['n_docs']:>9,}{t['n_tokens']:>13,}{t['n_bytes'] / 1e6:>9.2f}{'':>9}{t['n_quarantined']:>13,}")


def print_mixture_table(manifest: dict) -> None:
    total = sum(s["n_tokens"] for s in manifest["sources"]) or 1
    method = manifest["method"]
    click.echo(f"mixture: {method['name']} ({method['solver']}, {method['status']}), budget "
               f"{manifest['budget_tokens']:,.0f} tokens, seq_len {manifest['seq_len']}")
    click.echo(f"{'source':<16}{'tokens':>13}{'share':>8}{'weight':>8}{'target':>14}{'epochs':>8}{'cap':>6}  binding")
    for s in manifest["sources"]:
        cap = "-" if s["max_epochs"] is None else f"{s['max_epochs']:g}"
        click.echo(f"{s['name']:<16}{s['n_tokens']:>13,.0f}{s['n_tokens'] / total:>8.3f}{s['weight']:>8.3f}"
                   f"{s['target_tokens']:>14,.0f}{s['epochs']:>8.2f}{cap:>6}  {s['binding']}")
