"""The ``export`` and ``train`` stages: trainer-native files and a training run from pack + mixture.

``export`` calls :func:`mixweave.pipeline.export.export` once per format into the stage folder
(each format folder carries its own manifest too). ``train`` trains in a persistent work folder
beside the stage (``train.work/``) so a killed run resumes from its last checkpoint, then copies
the results (metrics, final checkpoint and its metadata) into the stage folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..config import to_plain
from ..data.manifest import sha256_file
from .runner import Stage, StageContext, StageResult


def export_options(e, fmt: str) -> dict:
    """The exporter options ``fmt`` takes from the export config (the batch only when it is set, so
    exports without one keep their fingerprint)."""
    options = {"mds": {"mds_weighting": e.mds_weighting}, "hf": {"hf_materialize": e.hf_materialize}}.get(fmt, {})
    if fmt in ("olmo", "datatrove") and e.global_batch_size is not None:
        options["global_batch_size"] = int(e.global_batch_size)
    return options


def run_export_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from .export import FORMATS, export

    e = ctx.config.export
    wanted = list(FORMATS) if "all" in [f.lower() for f in e.formats] else list(dict.fromkeys(f.lower() for f in e.formats))
    mixture = ctx.artifact("mix") / "mixture.json"
    per_format = {}
    for fmt in wanted:
        options = export_options(e, fmt)
        # Write into the temporary folder, but name the stage's final folder in every trainer config.
        summary = export(fmt, ctx.artifact("pack"), mixture, tmp / fmt, final_dir=ctx.artifact("export") / fmt,
                         force=True, **options)
        per_format[fmt] = {"windows": summary["plan"]["total_windows"], "tokens": summary["plan"]["realized_tokens"],
                           "seconds": summary.get("seconds")}
    return StageResult(counts={"formats": len(per_format)}, extra={"exports": per_format})


def run_train_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ..trainer.train import train

    t = ctx.config.train
    work = ctx.out / "train.work"
    settings = {"depth": t.depth, "batch_size": t.batch_size, **t.settings}
    if t.steps is not None:
        settings["steps"] = t.steps
    if ctx.config.benchmarks and "benchmarks" not in settings:
        settings["benchmarks"] = ctx.config.benchmarks
    result = train(ctx.artifact("pack"), ctx.artifact("mix") / "mixture.json", work, **settings)
    shutil.copytree(work, tmp, dirs_exist_ok=True)
    losses = [float(x) for x in result.losses]
    summary = {"steps": result.steps, "last_step": result.step, "finished": result.finished,
               "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
               "tokens_seen": result.tokens_seen, "tokens_per_s": round(result.tokens_per_s, 1),
               "mfu": result.mfu, "resumed_from": result.resumed_from, "eval": result.eval}
    return StageResult(counts={"steps": result.step, "tokens_seen": result.tokens_seen},
                       timings={"tokens_per_s": round(result.tokens_per_s, 1)}, extra={"train": summary})



def export_train_stages() -> list[Stage]:
    return [
        Stage("export", ("pack", "mix"), 1, lambda c: to_plain(c.export), run_export_stage,
              enabled=lambda c: c.export is not None, describe="trainer-native exports"),
        Stage("train", ("pack", "mix"), 1, lambda c: {"train": to_plain(c.train), "benchmarks": c.benchmarks},
              run_train_stage, extra_fingerprint=lambda c: sha256_file(c.benchmarks) if c.benchmarks and Path(c.benchmarks).is_file() else None,
              enabled=lambda c: c.train is not None, describe="a short training run on the mixture"),
    ]
