"""The ``study`` stage: proxy models per candidate mixture x order x seed, paired intervals against a
baseline -> study.parquet, study.json, charts (the work is in :mod:`mixweave.pipeline.study`;
in-progress runs live in ``<out>/study.work/``, which survives a crash)."""

from __future__ import annotations

from pathlib import Path

from ..runner import Stage, StageContext, StageResult


def run_study_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ..study import run_study

    summary = run_study(ctx, tmp)
    return StageResult(counts={"n_runs": summary["n_runs"]}, extra={"study": summary})


def _inputs(config):
    from ..study import study_inputs

    return study_inputs(config) if config.study is not None else ("count",)


def _slice(config):
    from ..study import study_settings

    return study_settings(config)


def _extra(config):
    from ..study import study_fingerprint_extra

    return study_fingerprint_extra(config)


STAGE = Stage("study", _inputs, 1, _slice, run_study_stage, extra_fingerprint=_extra,
              enabled=lambda c: c.study is not None,
              describe="proxy runs per candidate mixture x order x seed -> study.parquet")
