"""The ``export`` stage: the pack + mixture.json as trainer-native files, one folder per format (and one
per variant of mixture.json: ``export/<variant>/<format>/``)."""

from __future__ import annotations

import logging
from pathlib import Path

from ...data.typed import to_plain
from ...errors import ConfigError
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
    """Every configured format of the main mixture to ``export/<format>/`` and, when mixture.json
    lists variants (sequence-length phases, branch-train-stitch experts and stitch), of each
    variant's own mixture over its own pack to ``export/<variant>/<format>/``: the same exporter,
    written into the temporary folder while every trainer config names the stage's final folder.
    Cost: one export per (variant + main) x format."""
    from ...data.mixture_manifest import mixture_variants
    from ..export import FORMATS, export

    e = ctx.config.export
    wanted = list(FORMATS) if "all" in [f.lower() for f in e.formats] else list(dict.fromkeys(f.lower() for f in e.formats))
    mixture = ctx.artifact("mix") / "mixture.json"
    final = ctx.artifact("export")

    def export_all(pack: Path, mixture_path: Path, rel: Path) -> dict:
        per_format = {}
        for fmt in wanted:
            options = export_options(e, fmt)
            # Write into the temporary folder, but name the stage's final folder in every trainer config.
            summary = export(fmt, pack, mixture_path, tmp / rel / fmt, final_dir=final / rel / fmt,
                             force=True, **options)
            per_format[fmt] = {"windows": summary["plan"]["total_windows"], "tokens": summary["plan"]["realized_tokens"],
                               "seconds": summary.get("seconds")}
        return per_format

    per_format = export_all(ctx.artifact("pack"), mixture, Path())
    extra: dict = {"exports": per_format}
    variants = mixture_variants(mixture, pack_root=ctx.artifact("pack"))
    clash = [v.name for v in variants if v.name in FORMATS]
    if clash:
        raise ConfigError(f"{mixture}: variant {clash[0]!r} is named like an export format, so export/{clash[0]}/ "
                          "would hold both; rename the phase or bts expert and re-run mix")
    if variants:  # runs without variants keep their manifest as it was
        extra["exports_by_variant"] = {
            v.name: {"kind": v.kind, "seq_len": v.seq_len, "folder": v.name,
                     "formats": export_all(v.pack_dir, v.mixture_path, Path(v.name))} for v in variants}
        LOG.info("export: %d variant(s) x %d format(s) -> %s/<variant>/<format>", len(variants), len(wanted), final)
    return StageResult(counts={"formats": len(per_format), **({"variants": len(variants)} if variants else {})},
                       extra=extra)


STAGE = Stage("export", ("pack", "mix"), 1, lambda c: to_plain(c.export), run_export_stage,
              enabled=lambda c: c.export is not None, describe="trainer-native exports")
