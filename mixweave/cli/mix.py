"""``mixweave mix``: mixture weights -> mixture.json + chart, for a run config or a stats.json."""

from __future__ import annotations

from pathlib import Path

import click

from .common import config_options, load_run_config, print_mixture_table, run_configured_stage


@click.command("mix")
@config_options
@click.option("--stats", "stats_path", type=click.Path(dir_okay=False), help="Without a config: a stats.json to mix.")
@click.option("--method", help="Without a config: proportional|temperature|uniform|manual|unimax|utilimax|weakest-link.")
@click.option("--budget-tokens", type=float, help="Without a config: the token budget (default: all tokens once).")
@click.option("--unit", type=click.Choice(["tokens", "bytes"]), help="Solve in tokens (default) or UTF-8 bytes (then give --budget-bytes).")
@click.option("--budget-bytes", type=float, help="With --unit bytes: the budget in bytes (default: every source's bytes once).")
@click.option("--max-epochs", type=float, help="Epoch cap per source (default 4, or the config's mix.max_epochs).")
@click.option("--utility", type=click.Path(dir_okay=False), help="Utility table (parquet/csv) for utilimax / weakest-link.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Method parameter, e.g. tau=0.7 (repeatable).")
@click.option("--out", type=click.Path(), help="With --stats: folder for mixture.json + mixture.png. With --config: the run's out.")
@click.option("--force", is_flag=True)
def command(config_path, overrides, stats_path, method, budget_tokens, unit, budget_bytes, max_epochs, utility, params, out, force):
    """Solve mixture weights and write mixture.json + a PNG chart."""
    import json

    from ..pipeline.config import parse_value
    from ..errors import ConfigError

    if bool(config_path) == bool(stats_path):
        raise ConfigError("give exactly one of --config (a run config) or --stats (a stats.json)")
    kwargs = {}
    for item in params:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"--param {item!r}: write it as key=value, e.g. --param tau=3.33")
        key, raw = item.split("=", 1)
        kwargs[key.strip()] = parse_value(raw, f"--param {key.strip()}")
    if config_path:
        extra = list(overrides)
        if method:
            extra.append(f"mix.method={method}")
        if budget_tokens is not None:
            extra.append(f"mix.budget_tokens={budget_tokens!r}")
        if max_epochs is not None:
            extra.append(f"mix.max_epochs={max_epochs!r}")
        if unit:
            extra.append(f"mix.unit={unit}")
        if budget_bytes is not None:
            extra.append(f"mix.budget_bytes={budget_bytes!r}")
        if utility:
            extra.append(f"mix.utility={utility}")
        extra.extend(f"mix.params.{key}={json.dumps(value)}" for key, value in kwargs.items())
        config = load_run_config(config_path, tuple(extra), None, out)
        if config.mix is None:
            config = load_run_config(config_path, tuple(extra) + ("mix.method=unimax",), None, out)
        run_configured_stage(config, "mix", force=force)
        target = Path(config.out) / "mix"
    else:
        from ..pipeline.stages.mix import solve_and_write_mixture

        if not method or not out:
            raise ConfigError("with --stats, also give --method and --out")
        if budget_bytes is not None and unit != "bytes":
            raise ConfigError("--budget-bytes is a budget in bytes: add --unit bytes (or give --budget-tokens)")
        if unit == "bytes" and budget_tokens is not None:
            raise ConfigError("--unit bytes takes its budget from --budget-bytes, not --budget-tokens")
        try:
            stats = json.loads(Path(stats_path).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {stats_path} as JSON ({exc}); pass the stats.json of a count stage") from None
        from ..data.typed import from_dict
        from ..mixers.params import METHOD_PARAMS, method_key

        if method_key(method) in METHOD_PARAMS:
            from_dict(METHOD_PARAMS[method_key(method)], kwargs, "--param")
        target = Path(out)
        solve_and_write_mixture(target, stats, method=method, budget_tokens=budget_tokens or 0.0,
                                max_epochs=4.0 if max_epochs is None else max_epochs, utility_path=utility,
                                params=kwargs, unit=unit or "tokens", budget_bytes=budget_bytes or 0.0)
    from ..data.mixture_manifest import read_mixture_manifest

    print_mixture_table(read_mixture_manifest(target / "mixture.json"))
    click.echo(f"wrote {target / 'mixture.json'} and {target / 'mixture.png'}")
