"""The ``mixweave`` command line: one subcommand per stage, ``run`` for the whole plan.

User errors (:class:`~mixweave.errors.MixweaveError`) print one ``error:`` line and exit 2;
unexpected failures print one ``internal error:`` line (``MIXWEAVE_DEBUG=1`` shows the traceback)
and exit 1. Library code logs through stdlib ``logging``; this module installs the handler.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from . import __version__
from .errors import MixweaveError

LOG = logging.getLogger("mixweave")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (survives redirection and test capture)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("mixweave")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # Libraries (py4j during a Ctrl-C, pyspark) log tracebacks to the root logger, and some call
    # logging.basicConfig; a NullHandler there keeps users' consoles to mixweave's own lines.
    top = logging.getLogger()
    if not any(isinstance(h, logging.NullHandler) for h in top.handlers):
        top.handlers[:] = [logging.NullHandler()]
    for noisy in ("py4j", "pyspark", "numba", "matplotlib", "sentence_transformers", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mixweave")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(verbose: int, quiet: bool) -> None:
    """mixweave: how much of each source (mixtures) and in what order (In-Context Pretraining)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    _setup_logging(-1 if quiet else verbose)


def _load(config_path: str | None, overrides: tuple[str, ...], master: str | None, out: str | None):
    from .config import apply_overrides, load_raw, parse_config

    raw = load_raw(config_path) if config_path else {}
    extra = list(overrides)
    if master:
        extra.append(f"spark.master={master}")
    if out:
        extra.append(f"out={out}")
    return parse_config(apply_overrides(raw, extra))


def _print_reports(reports) -> None:
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


@cli.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
@click.option("--master", help="Spark master URL (overrides spark.master).")
@click.option("--out", help="Output folder (overrides out).")
@click.option("--stage", "stages", multiple=True, help="Run only these stages (and what they need).")
@click.option("--force", is_flag=True, help="Re-run stages even when their fingerprint matches.")
def run(config_path, overrides, master, out, stages, force):
    """Run every stage of CONFIG in dependency order; finished stages are skipped."""
    from .pipeline.runner import run_stages
    from .data.artifacts import load_stats
    from .pipeline.stages import build_stages

    config = _load(config_path, overrides, master, out)
    click.echo(f"mixweave run: {config_path} -> {config.out}", err=True)
    reports = run_stages(build_stages(), config, wanted=list(stages) or None, force=force, on_report=lambda r: _print_reports([r]))
    count_dir = Path(config.out) / "count"
    if any(r.name == "count" for r in reports):
        click.echo(f"\nper-source statistics ({count_dir / 'stats.json'}):")
        print_stats_table(load_stats(count_dir))
    mixture = Path(config.out) / "mix" / "mixture.json"
    if any(r.name == "mix" and r.status != "disabled" for r in reports) and mixture.is_file():
        from .data.mixture_manifest import read_mixture_manifest

        click.echo("")
        print_mixture_table(read_mixture_manifest(mixture))
    if not stages:
        from .pipeline.report import write_report

        report = write_report(config.out, Path(config.out) / "report.html", utility_path=_utility_path(config))
        click.echo(f"\nreport: {report.resolve()}")
    click.echo(f"results: {Path(config.out).resolve()}")


def _utility_path(config):
    if config.mix is not None and config.mix.utility:
        return config.mix.utility
    return None  # the report finds OUT/utility/utility.parquet by itself


@cli.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--out", help="Run folder (overrides out).")
def report(config_path, overrides, out):
    """Write OUT/report.html from the artifacts of a run (re-runs nothing)."""
    from .errors import ConfigError
    from .pipeline.report import write_report

    config = _load(config_path, overrides, None, out)
    if not Path(config.out).is_dir():
        raise ConfigError(f"run folder {config.out} does not exist; run `mixweave run {config_path}` first")
    target = write_report(config.out, Path(config.out) / "report.html", utility_path=_utility_path(config))
    click.echo(f"report: {target.resolve()}")


@cli.command()
@click.option("--source", "sources", multiple=True, required=True, metavar="NAME=GLOB",
              help="A source and a glob of its files (repeatable; repeat a NAME to add globs).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Writes OUT/docs, OUT/quarantine, OUT/_manifest.json.")
@click.option("--text-field", default="text", show_default=True, help="JSON/parquet field holding the text.")
@click.option("--id-field", default="id", show_default=True, help="Field holding the document id (optional in the data).")
@click.option("--tokenizer", default="default", show_default=True, help="'default' (GPT-2 BPE), a tokenizer.json or a .tiktoken file.")
@click.option("--max-doc-bytes", default=10_000_000, show_default=True, type=int)
@click.option("--master", default="local[*]", show_default=True, help="Spark master URL.")
@click.option("--force", is_flag=True, help="Re-run even when the output is up to date.")
def ingest(sources, out, text_field, id_field, tokenizer, max_doc_bytes, master, force):
    """Ingest sources without a config file."""
    from .config import parse_config
    from .errors import ConfigError
    from .pipeline.runner import run_stages
    from .pipeline.stages import build_stages

    by_name: dict[str, list[str]] = {}
    for item in sources:
        if "=" not in item:
            raise ConfigError(f"--source {item!r}: write it as NAME=GLOB, e.g. --source web='data/web/*.jsonl'")
        name, pattern = item.split("=", 1)
        by_name.setdefault(name.strip(), []).append(pattern)
    raw = {
        "out": str(Path(out).parent),
        "spark": {"master": master},
        "tokenizer": {"path": tokenizer},
        "sources": {n: {"paths": p, "text_field": text_field, "id_field": id_field} for n, p in by_name.items()},
        "ingest": {"max_doc_bytes": max_doc_bytes},
    }
    config = parse_config(raw)
    reports = run_stages(build_stages(), config, wanted=["ingest"], force=force, overrides={"ingest": Path(out)})
    _print_reports(reports)
    from .data.manifest import read_manifest

    manifest = read_manifest(out)
    click.echo(f"{'source':<16}{'input':>9}{'kept':>9}{'quarantined':>13}{'tokens':>13}  reasons")
    for name, s in manifest["sources"].items():
        reasons = ", ".join(f"{k}={v}" for k, v in s["quarantine_reasons"].items()) or "-"
        click.echo(f"{name:<16}{s['n_input']:>9,}{s['n_docs']:>9,}{s['n_quarantined']:>13,}{s['n_tokens']:>13,}  {reasons}")


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


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Run config: mixes its count (and pack) outputs.")
@click.option("--stats", "stats_path", type=click.Path(dir_okay=False), help="Without a config: a stats.json to mix.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. mix.method=utilimax.")
@click.option("--method", help="Without a config: proportional|temperature|uniform|manual|unimax|utilimax|weakest-link.")
@click.option("--budget-tokens", type=float, help="Without a config: the token budget (default: all tokens once).")
@click.option("--max-epochs", type=float, help="Epoch cap per source (default 4, or the config's mix.max_epochs).")
@click.option("--utility", type=click.Path(dir_okay=False), help="Utility table (parquet/csv) for utilimax / weakest-link.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Method parameter, e.g. tau=0.7 (repeatable).")
@click.option("--out", type=click.Path(), help="With --stats: folder for mixture.json + mixture.png. With --config: the run's out.")
@click.option("--force", is_flag=True)
def mix(config_path, stats_path, overrides, method, budget_tokens, max_epochs, utility, params, out, force):
    """Solve mixture weights and write mixture.json + a PNG chart."""
    import json

    from .config import parse_value
    from .errors import ConfigError

    if bool(config_path) == bool(stats_path):
        raise ConfigError("give exactly one of --config (a run config) or --stats (a stats.json)")
    kwargs = {}
    for item in params:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"--param {item!r}: write it as key=value, e.g. --param tau=3.33")
        key, raw = item.split("=", 1)
        kwargs[key.strip()] = parse_value(raw, f"--param {key.strip()}")
    if config_path:
        from .pipeline.runner import run_stages
        from .pipeline.stages import build_stages

        extra = list(overrides)
        if method:
            extra.append(f"mix.method={method}")
        if budget_tokens is not None:
            extra.append(f"mix.budget_tokens={budget_tokens!r}")
        if max_epochs is not None:
            extra.append(f"mix.max_epochs={max_epochs!r}")
        if utility:
            extra.append(f"mix.utility={utility}")
        extra.extend(f"mix.params.{key}={json.dumps(value)}" for key, value in kwargs.items())
        config = _load(config_path, tuple(extra), None, out)
        if config.mix is None:
            config = _load(config_path, tuple(extra) + ("mix.method=unimax",), None, out)
        reports = run_stages(build_stages(), config, wanted=["mix"], force=force)
        _print_reports(reports)
        target = Path(config.out) / "mix"
    else:
        from .pipeline.stages.mix import solve_and_write_mixture

        if not method or not out:
            raise ConfigError("with --stats, also give --method and --out")
        try:
            stats = json.loads(Path(stats_path).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {stats_path} as JSON ({exc}); pass the stats.json of a count stage") from None
        from .config import from_dict
        from .mixers.params import METHOD_PARAMS, method_key

        if method_key(method) in METHOD_PARAMS:
            from_dict(METHOD_PARAMS[method_key(method)], kwargs, "--param")
        target = Path(out)
        solve_and_write_mixture(target, stats, method=method, budget_tokens=budget_tokens or 0.0,
                                max_epochs=4.0 if max_epochs is None else max_epochs, utility_path=utility,
                                params=kwargs)
    from .data.mixture_manifest import read_mixture_manifest

    print_mixture_table(read_mixture_manifest(target / "mixture.json"))
    click.echo(f"wrote {target / 'mixture.json'} and {target / 'mixture.png'}")


@cli.command()
@click.argument("artifacts", nargs=-1, required=True, type=click.Path())
def verify(artifacts):
    """Re-hash every file listed in each artifact's _manifest.json."""
    from .data.manifest import verify_stage

    for artifact in artifacts:
        manifest = verify_stage(artifact)
        click.echo(f"ok  {artifact}  ({manifest['stage']}, {len(manifest['files'])} files)")


def _attach_optional_commands() -> None:
    from .corpus.cli import corpus
    from .utility.cli import utility_command

    from .pipeline.export.cli import export_command
    from .trainer.cli import train_command

    cli.add_command(corpus)
    cli.add_command(utility_command)
    cli.add_command(export_command)
    cli.add_command(train_command)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors, no tracebacks for users."""
    try:
        _attach_optional_commands()
    except ImportError as exc:  # pragma: no cover - a broken install
        LOG.debug("optional commands unavailable: %s", exc)
    try:
        cli.main(args=argv, prog_name="mixweave", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("error: interrupted; run the same command again to resume (finished stages are kept)", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MixweaveError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into one line
        if os.environ.get("MIXWEAVE_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        click.echo(f"internal error: {type(exc).__name__}: {message} (set MIXWEAVE_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
