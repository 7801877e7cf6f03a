"""``mixweave train``: the train stage of a run config, or :func:`mixweave.trainer.train.train` on given folders."""

from __future__ import annotations

import click

from .common import config_options, load_run_config, refuse_flags_with_config, run_configured_stage


@click.command("train")
@config_options
@click.option("--pack", "pack_dir", type=click.Path(exists=True, file_okay=False),
              help="Pack artifact folder (windows + _manifest.json).")
@click.option("--mixture", "mixture_path", type=click.Path(exists=True, dir_okay=False),
              help="mixture.json written by `mixweave mix`.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Run folder: checkpoints/, metrics.jsonl, eval.json, _manifest.json.")
@click.option("--depth", default=2, show_default=True, type=int, help="Model size dial (12 = GPT-2 small).")
@click.option("--steps", default=None, type=int, help="Optimizer steps (default: exactly the mixture's budget).")
@click.option("--batch-size", default=8, show_default=True, type=int, help="Windows per step (per rank).")
@click.option("--grad-accum", default=1, show_default=True, type=int)
@click.option("--lr", default=3e-3, show_default=True, type=float)
@click.option("--warmup-steps", default=None, type=int, help="Default: 5% of the steps.")
@click.option("--seed", default=0, show_default=True, type=int, help="Model initialisation seed.")
@click.option("--benchmarks", default=None, type=click.Path(exists=True, dir_okay=False),
              help="benchmarks.jsonl for per-benchmark eval loss.")
@click.option("--holdout-windows", default=16, show_default=True, type=int,
              help="Windows per source kept out of training for per-source eval loss.")
@click.option("--log-interval", default=10, show_default=True, type=int)
@click.option("--eval-interval", default=None, type=int)
@click.option("--checkpoint-interval", default=None, type=int)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--compile/--no-compile", "compile_", default=None, help="torch.compile (default: on CUDA).")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue from OUT's latest checkpoint.")
def command(config_path, overrides, pack_dir, mixture_path, out_dir, depth, steps, batch_size, grad_accum, lr, warmup_steps, seed,
                  benchmarks, holdout_windows, log_interval, eval_interval, checkpoint_interval, device, compile_,
                  resume):
    """Train the compact GPT on the mixture, reading mixture.json and the pack directly (its sequence-length
    phases in order when mixture.json has phase variants)."""
    from ..errors import ConfigError
    from ..trainer.train import train

    refuse_flags_with_config(config_path, pack=pack_dir, mixture=mixture_path, out=out_dir)
    if config_path:  # the run's train section (change it with --set train.KEY=VALUE)
        config = load_run_config(config_path, overrides)
        if config.train is None:
            raise ConfigError(f"{config_path} has no train section: add one (train: {{depth: 2, steps: 100}})")
        run_configured_stage(config, "train", force=False)
        return
    if not (pack_dir and mixture_path and out_dir):
        raise ConfigError("give --config CONFIG, or --pack, --mixture and --out")

    result = train(pack_dir, mixture_path, out_dir, depth=depth, steps=steps, batch_size=batch_size,
                   grad_accum=grad_accum, lr=lr, warmup_steps=warmup_steps, seed=seed, benchmarks=benchmarks,
                   holdout_windows=holdout_windows, log_interval=log_interval, eval_interval=eval_interval,
                   checkpoint_interval=checkpoint_interval, device=device, compile=compile_, resume=resume)
    if result.losses:
        resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from else ""
        click.echo(f"trained steps {result.first_step}..{result.step} of {result.steps}: loss "
                   f"{result.losses[0]:.4f} -> {result.losses[-1]:.4f}, {result.tokens_per_s:,.0f} tokens/s{resumed}")
    else:
        click.echo(f"already trained to step {result.step} of {result.steps}; nothing to do")
    for p in result.phases:  # sequence-length phases (mixture.json's phase variants), in training order
        losses = result.phase_losses.get(p["name"], [])
        trained = f", loss {losses[0]:.4f} -> {losses[-1]:.4f}" if losses else ""
        click.echo(f"  phase {p['name']:<14} seq_len {p['seq_len']:>6}  steps {p['first_step']}..{p['last_step']}{trained}")
        for name, loss in result.eval.get("phases", {}).get(p["name"], {}).get("sources", {}).items():
            click.echo(f"    eval {name:<18} {loss:.4f}")
    for name, loss in result.eval.get("sources", {}).items():
        click.echo(f"  eval {name:<20} {loss:.4f}")
    for name, row in result.eval.get("benchmarks", {}).items():
        click.echo(f"  eval {name:<20} {row['loss']:.4f} +- {row['sem']:.4f} (n={row['n']})")
    click.echo(f"checkpoint: {result.checkpoint}")
