"""The ``export`` stage: the pack + mixture.json as trainer-native files, one folder per format."""

from __future__ import annotations

import logging
from pathlib import Path

from ...data.typed import to_plain
from ..runner import Stage, StageContext, StageResult

LOG = logging.getLogger(__name__)


def export_options(e, fmt: str) -> dict:
    """The exporter options ``fmt`` takes from the export config (the batch only when it is set, so
    exports without one keep their fingerprint)."""
    options = {"mds": {"mds_weighting": e.mds_weighting}, "hf": {"hf_materialize": e.hf_materialize}}.get(fmt, {})
    if fmt in ("olmo", "datatrove") and e.global_batch_size is not None:
        options["global_batch_size"] = int(e.global_batch_size)
    if fmt in ("hf", "mds") and e.batching != "shuffle":  # similarity batching (Lory): one ordered dataset
        options.update(batching=e.batching, global_batch_size=int(e.global_batch_size))
    return options


def run_export_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ..export import FORMATS, export

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


STAGE = Stage("export", ("pack", "mix"), 1, lambda c: to_plain(c.export), run_export_stage,
              enabled=lambda c: c.export is not None, describe="trainer-native exports")
