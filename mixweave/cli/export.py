"""``mixweave export``: the export stage of a run config, or :func:`mixweave.pipeline.export.export` on given folders."""

from __future__ import annotations

from pathlib import Path

import click

from ..pipeline.export import FORMATS
from .common import config_options, load_run_config, refuse_flags_with_config, run_configured_stage


@click.command("export")
@config_options
@click.option("--format", "formats", multiple=True,
              type=click.Choice([*FORMATS, "all"], case_sensitive=False),
              help="Target format (repeatable, or 'all'); with --config it replaces export.formats.")
@click.option("--pack", "pack_dir", type=click.Path(exists=True, file_okay=False),
              help="Without --config: pack artifact folder (windows + _manifest.json).")
@click.option("--mixture", "mixture_path", type=click.Path(exists=True, dir_okay=False),
              help="Without --config: mixture.json written by `mixweave mix`.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Without --config: export root; each format is written to OUT/<format>/.")
@click.option("--path-prefix", default=None,
              help="How config files (blends, streams) name OUT/<format> (default: its absolute path).")
@click.option("--mds-weighting", type=click.Choice(["choose", "proportion"]), default="choose", show_default=True,
              help="MDS streams: absolute samples (choose) or proportion + epoch_size.")
@click.option("--hf-materialize/--no-hf-materialize", default=True, show_default=True,
              help="HF: write each source's planned rows (exact counts) or each window once (approximate).")
@click.option("--global-batch-size", type=click.IntRange(min=1), default=None,
              help="OLMo-core / nanotron: sequences per optimizer step; counts are rounded to whole batches "
                   "and shared by weight so the trainer realises them exactly (default 1).")
@click.option("--variant", "variant", default=None, metavar="NAME|all",
              help="A variant of mixture.json (a sequence-length phase, a bts expert or the stitch) to OUT/NAME/<format>/ "
                   "instead of the main mixture; 'all': the main mixture and every variant. With --config the "
                   "stage always exports every variant; this names the folders to print.")
@click.option("--force", is_flag=True, help="Rewrite even when the export is up to date.")
def command(config_path, overrides, formats, pack_dir, mixture_path, out_dir, path_prefix, mds_weighting,
            hf_materialize, global_batch_size, variant, force):
    """Export the pack + mixture to trainer-native files (Megatron, OLMo-core, MDS, HF, datatrove)."""
    from ..errors import ConfigError
    from ..pipeline.export import export

    refuse_flags_with_config(config_path, pack=pack_dir, mixture=mixture_path, out=out_dir, path_prefix=path_prefix)
    if config_path:
        extra = list(overrides) + ([f"export.formats=[{', '.join(formats)}]"] if formats else [])
        config = load_run_config(config_path, extra)
        if config.export is None:
            raise ConfigError(f"{config_path} has no export section: add one (export: {{formats: [megatron]}}) "
                              "or pass --format")
        run_configured_stage(config, "export", force=force)
        root = Path(config.out) / "export"
        click.echo(f"exports: {root}")
        if variant is not None:
            from ..data.mixture_manifest import mixture_variants

            mix = Path(config.out) / "mix" / "mixture.json"
            for v in _chosen(mixture_variants(mix, pack_root=Path(config.out) / "pack"), variant, mix):
                click.echo(f"  {v.kind} {v.name} (seq_len {v.seq_len}): {root / v.name}/<format>")
        return
    if not (formats and pack_dir and mixture_path and out_dir):
        raise ConfigError("give --config CONFIG, or --format, --pack, --mixture and --out")

    lowered = [f.lower() for f in formats]
    wanted = list(FORMATS) if "all" in lowered else list(dict.fromkeys(lowered))
    jobs = [("", Path(pack_dir), Path(mixture_path))]  # (folder under OUT, pack, mixture)
    if variant is not None:
        from ..data.mixture_manifest import mixture_variants

        chosen = _chosen(mixture_variants(mixture_path, pack_root=pack_dir), variant, mixture_path)
        jobs = (jobs if variant == "all" else []) + [(v.name, v.pack_dir, v.mixture_path) for v in chosen]
    for fmt in wanted:
        for rel, pack, mixture in jobs:
            _export_one(export, fmt, pack, mixture, Path(out_dir) / rel / fmt, rel, path_prefix, mds_weighting,
                        hf_materialize, global_batch_size, force)


def _chosen(variants, name: str, mixture) -> list:
    """The variants ``--variant NAME|all`` selects (one ConfigError line when there is none of that name)."""
    from ..errors import ConfigError

    if not variants:
        raise ConfigError(f"{mixture} has no variants (no mix.phases or mix.bts); drop --variant")
    if name == "all":
        return list(variants)
    chosen = [v for v in variants if v.name == name]
    if not chosen:
        raise ConfigError(f"{mixture} has no variant {name!r}; it has {', '.join(v.name for v in variants)} (or use all)")
    return chosen


def _export_one(export, fmt, pack_dir, mixture_path, out, rel, path_prefix, mds_weighting, hf_materialize,
                global_batch_size, force) -> None:
    """One format of one mixture to ``out``, with the plan's per-source lines."""
    options = {"mds": {"mds_weighting": mds_weighting}, "hf": {"hf_materialize": hf_materialize}}.get(fmt, {})
    if fmt in ("olmo", "datatrove") and global_batch_size is not None:
        options["global_batch_size"] = global_batch_size
    prefix = None if path_prefix is None else "/".join([path_prefix.rstrip("/"), *([rel] if rel else []), fmt])
    summary = export(fmt, pack_dir, mixture_path, out, path_prefix=prefix, force=force, **options)
    status = "skipped (up to date)" if summary.get("skipped") else f"{summary.get('seconds', 0):.1f}s"
    plan = summary["plan"]
    click.echo(f"{fmt:<10} {len(summary.get('files', []))} files, {plan['total_windows']:,} windows planned "
               f"({plan['realized_tokens']:,} tokens)  {status}  -> {out}")
    for name, s in plan["sources"].items():
        click.echo(f"  {name:<16} weight {s['realized_weight']:.4f}  windows {s['target_windows']:>9,} of "
                   f"{s['n_windows']:>9,}  epochs {s['epochs']:.3f}"
                   + (f"  (cap {s['max_epochs']:g})" if s["max_epochs"] is not None else ""))
    if "instances" in summary and not summary.get("skipped") and global_batch_size:
        click.echo(f"  OLMo-core at {global_batch_size} sequences a batch realises: "
                   + ", ".join(f"{n} {k}" for n, k in summary["instances"].items()))
