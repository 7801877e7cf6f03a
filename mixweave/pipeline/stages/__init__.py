"""The stages of a run: one module each, and this table, the only place a stage is registered.

A stage module defines ``STAGE``: its name, the stages it reads (fixed, or chosen by the config),
its version, the slice of the run config its fingerprint comes from, and the function that writes
its files into the temporary folder the runner hands it. Adding a stage = one module here + one
row below + its config section. The table is in dependency order; the runner still resolves
dependencies itself (``plan_order``).
"""

from __future__ import annotations

from ..runner import Stage
from . import count, dedup, embed, export, ingest, knn, mix, order, pack, study, train, utility

STAGES: tuple[Stage, ...] = (
    ingest.STAGE,   # sources -> docs/ + quarantine/ (Spark)
    count.STAGE,    # -> stats.json
    embed.STAGE,    # -> per-source embeddings (Spark)
    knn.STAGE,      # -> I-*.npy, D-*.npy shards
    dedup.STAGE,    # -> keep-*.npy + pairs-*.parquet on the kNN shards (Spark for large sources)
    order.STAGE,    # -> order-*.npy (ICP traversal)
    pack.STAGE,     # -> S-token windows
    utility.STAGE,  # -> utility.parquet
    mix.STAGE,      # -> mixture.json
    export.STAGE,   # -> trainer-native files
    train.STAGE,    # -> checkpoints, metrics
    study.STAGE,    # -> study.parquet, study.json: proxy runs per candidate x order x seed
)


def build_stages() -> dict[str, Stage]:
    """The stage table by name (what :func:`mixweave.pipeline.runner.run_stages` takes)."""
    return {stage.name: stage for stage in STAGES}
