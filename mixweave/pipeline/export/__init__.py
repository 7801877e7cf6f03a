"""Exporters: the pack (windows) + mixture.json -> files each trainer reads natively.

``export(format, pack_dir, mixture_path, out_dir)`` plans the run once
(:func:`mixweave.trainer.plan.load_plan`: windows per source, epoch caps), writes the format's
files into a temporary sibling folder, then ``_manifest.json`` (every file with sha256, the plan
with requested and realised tokens/epochs per source, the weights as the trainer will read them)
and renames the folder into place. Re-running with the same inputs and options is skipped.

Formats (one module each): ``megatron`` (also NeMo, Megatron-Bridge, GPT-NeoX), ``olmo``
(OLMo-core / Dolma token files), ``mds`` (MosaicML Streaming / llm-foundry), ``hf`` (Hugging Face
datasets), ``datatrove`` (datatrove / nanotron).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

from mixweave.data.manifest import (
    MANIFEST_NAME,
    atomic_stage_dir,
    build_manifest,
    fingerprint,
    manifest_sha256,
    read_manifest,
    sha256_file,
    write_json_atomic,
)
from mixweave.data.windows import windows_info
from mixweave.errors import ConfigError

log = logging.getLogger(__name__)

EXPORT_VERSION = 1
FORMATS = ("megatron", "olmo", "mds", "hf", "datatrove")
ALIASES = {"nemo": "megatron", "neox": "megatron", "gpt-neox": "megatron", "olmo-core": "olmo", "dolma": "olmo",
           "streaming": "mds", "mosaic": "mds", "huggingface": "hf", "datasets": "hf", "nanotron": "datatrove"}
OPTIONS = {
    "megatron": set(),
    "olmo": {"max_file_bytes", "global_batch_size"},
    "mds": {"mds_weighting", "mds_size_limit", "batching", "global_batch_size"},
    "hf": {"hf_materialize", "max_file_bytes", "batching", "global_batch_size"},
    "datatrove": {"max_file_bytes", "global_batch_size"},
}


def _writer(fmt: str) -> Callable:
    if fmt == "megatron":
        from mixweave.pipeline.export.megatron import export_megatron as fn
    elif fmt == "olmo":
        from mixweave.pipeline.export.olmo import export_olmo as fn
    elif fmt == "mds":
        from mixweave.pipeline.export.mds import export_mds as fn
    elif fmt == "hf":
        from mixweave.pipeline.export.hf import export_hf as fn
    else:
        from mixweave.pipeline.export.datatrove import export_datatrove as fn
    return fn


def normalize_format(fmt: str) -> str:
    key = str(fmt).strip().lower()
    key = ALIASES.get(key, key)
    if key not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    return key


def export(format: str, pack_dir: str | Path, mixture_path: str | Path, out_dir: str | Path, *,
           path_prefix: str | None = None, final_dir: str | Path | None = None, force: bool = False,
           **options: Any) -> dict[str, Any]:
    """Write ``format`` into ``out_dir`` (atomically) and return its summary (also stored under
    ``export`` in ``out_dir/_manifest.json``). ``final_dir``: where ``out_dir`` will finally live when
    it is written inside a stage's temporary folder (default ``out_dir`` itself); config files name
    that place, never the temporary one. ``path_prefix``: how config files name the output folder
    (default the absolute path of ``final_dir``; e.g. ``s3://bucket/run`` after an upload)."""
    from mixweave.pipeline.export.common import ExportContext
    from mixweave.trainer.plan import load_plan

    fmt = normalize_format(format)
    unknown = sorted(set(options) - OPTIONS[fmt])
    if unknown:
        accepted = ", ".join(sorted(OPTIONS[fmt])) or "none"
        raise ConfigError(f"export format {fmt} does not take option(s) {', '.join(unknown)}; it accepts: {accepted}")
    pack_dir, mixture_path, out = Path(pack_dir), Path(mixture_path), Path(out_dir)
    final = out if final_dir is None else Path(final_dir)
    plan = load_plan(pack_dir, mixture_path)
    prefix = str(final.resolve()) if path_prefix is None else str(path_prefix)
    config = {"format": fmt, "path_prefix": prefix, "options": dict(sorted(options.items()))}
    inputs = {"pack": manifest_sha256(pack_dir), "mixture": sha256_file(mixture_path)}
    value = fingerprint("export", EXPORT_VERSION, config, inputs)
    existing = read_manifest(out) if out.exists() else None
    if existing is not None and existing.get("fingerprint") == value and not force:
        log.info("export %s: %s is up to date, skipped", fmt, out)
        return {**existing.get("export", {}), "skipped": True}
    started = time.perf_counter()
    with atomic_stage_dir(out) as tmp:
        ctx = ExportContext(pack_dir=pack_dir, mixture_path=mixture_path, plan=plan, info=windows_info(pack_dir),
                            final_dir=final, path_prefix=prefix, options=dict(options))
        summary = _writer(fmt)(ctx, tmp)
        seconds = round(time.perf_counter() - started, 3)
        summary = {"format": fmt, "out": str(final), "path_prefix": prefix, **summary, "plan": plan.to_dict(),
                   "seconds": seconds}
        if ctx.sink_id is not None:  # every export manifest names the attention-sink token
            summary.update(sink_id=ctx.sink_id, sink_token=ctx.info.tokenizer.get("sink_token"),
                           vocab_size=ctx.vocab_size)
        manifest = build_manifest(
            stage="export", stage_version=EXPORT_VERSION, config=config, fingerprint_value=value,
            inputs={"pack": {"path": str(pack_dir), "sha256": inputs["pack"]},
                    "mixture": {"path": str(mixture_path), "sha256": inputs["mixture"]}},
            root=tmp, counts={"windows": plan.total_windows, "tokens": plan.total_windows * plan.seq_len},
            timings={"total_s": seconds}, extra={"export": summary})
        write_json_atomic(tmp / MANIFEST_NAME, manifest)
    log.info("export %s: %d sources, %d planned windows -> %s (%.1fs)", fmt, len(plan.sources), plan.total_windows,
             final, seconds)
    return summary


__all__ = ["ALIASES", "FORMATS", "export", "normalize_format"]
