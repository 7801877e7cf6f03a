"""``mixweave export``: thin click wrapper over :func:`mixweave.pipeline.export.export`."""

from __future__ import annotations

from pathlib import Path

import click

from mixweave.pipeline.export import FORMATS


@click.command("export")
@click.option("--format", "formats", multiple=True, required=True,
              type=click.Choice([*FORMATS, "all"], case_sensitive=False),
              help="Target format (repeatable, or 'all').")
@click.option("--pack", "pack_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Pack artifact folder (windows + _manifest.json).")
@click.option("--mixture", "mixture_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="mixture.json written by `mixweave mix`.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Export root: each format is written to OUT/<format>/.")
@click.option("--path-prefix", default=None,
              help="How config files (blends, streams) name OUT/<format> (default: its absolute path).")
@click.option("--mds-weighting", type=click.Choice(["choose", "proportion"]), default="choose", show_default=True,
              help="MDS streams: absolute samples (choose) or proportion + epoch_size.")
@click.option("--hf-materialize/--no-hf-materialize", default=True, show_default=True,
              help="HF: write each source's planned rows (exact counts) or each window once (approximate).")
@click.option("--global-batch-size", type=click.IntRange(min=1), default=None,
              help="OLMo-core / nanotron: sequences per optimizer step; counts are rounded to whole batches "
                   "and shared by weight so the trainer realises them exactly (default 1).")
@click.option("--force", is_flag=True, help="Rewrite even when the export is up to date.")
def export_command(formats, pack_dir, mixture_path, out_dir, path_prefix, mds_weighting, hf_materialize,
                   global_batch_size, force):
    """Export the pack + mixture to trainer-native files (Megatron, OLMo-core, MDS, HF, datatrove)."""
    from mixweave.pipeline.export import export

    lowered = [f.lower() for f in formats]
    wanted = list(FORMATS) if "all" in lowered else list(dict.fromkeys(lowered))
    for fmt in wanted:
        options = {"mds": {"mds_weighting": mds_weighting}, "hf": {"hf_materialize": hf_materialize}}.get(fmt, {})
        if fmt in ("olmo", "datatrove") and global_batch_size is not None:
            options["global_batch_size"] = global_batch_size
        prefix = None if path_prefix is None else f"{path_prefix.rstrip('/')}/{fmt}"
        summary = export(fmt, pack_dir, mixture_path, Path(out_dir) / fmt, path_prefix=prefix, force=force, **options)
        status = "skipped (up to date)" if summary.get("skipped") else f"{summary.get('seconds', 0):.1f}s"
        plan = summary["plan"]
        click.echo(f"{fmt:<10} {len(summary.get('files', []))} files, {plan['total_windows']:,} windows planned "
                   f"({plan['realized_tokens']:,} tokens)  {status}  -> {Path(out_dir) / fmt}")
        for name, s in plan["sources"].items():
            click.echo(f"  {name:<16} weight {s['realized_weight']:.4f}  windows {s['target_windows']:>9,} of "
                       f"{s['n_windows']:>9,}  epochs {s['epochs']:.3f}"
                       + (f"  (cap {s['max_epochs']:g})" if s["max_epochs"] is not None else ""))
        if "instances" in summary and not summary.get("skipped") and global_batch_size:
            click.echo(f"  OLMo-core at {global_batch_size} sequences a batch realises: "
                       + ", ".join(f"{n} {k}" for n, k in summary["instances"].items()))
