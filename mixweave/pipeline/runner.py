"""The stage runner: a small DAG of stages, each an atomic, fingerprinted artifact folder.

A :class:`Stage` names its inputs (other stages), the slice of the run config it depends on,
and a function that writes its files into a temporary folder. :func:`run_stages` walks the plan
in dependency order; for each stage it computes the fingerprint (config slice + stage version +
sha256 of every input manifest + whatever the stage adds, e.g. input file sizes and mtimes) and
skips the stage when its existing manifest carries the same fingerprint. Otherwise the stage runs
inside :func:`~mixweave.data.manifest.atomic_stage_dir`, so a crash leaves the previous artifact
(or none) and the next run simply does the work again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import RunConfig
from ..data.manifest import (
    MANIFEST_NAME,
    atomic_stage_dir,
    build_manifest,
    fingerprint,
    hold_folder,
    manifest_sha256,
    read_manifest,
    write_json_atomic,
)
from ..data.progress import spark_progress
from ..errors import ConfigError, Interrupt

LOG = logging.getLogger(__name__)


@dataclass
class StageResult:
    counts: dict = field(default_factory=dict)
    drops: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


@dataclass
class StageContext:
    config: RunConfig
    out: Path
    overrides: dict[str, Path] = field(default_factory=dict)
    _spark: Any = None

    def artifact(self, stage: str) -> Path:
        """Where a stage's artifact lives: ``<out>/<stage>`` unless the caller pinned it elsewhere."""
        return self.overrides.get(stage, self.out / stage)

    def spark(self):
        if self._spark is None:
            from ..jobs.spark import get_spark

            self._spark = get_spark(
                self.config.spark.master, driver_memory=self.config.spark.driver_memory, conf=self.config.spark.conf
            )
        return self._spark


def each_source(ctx: StageContext, sources, work: Callable[[str], Any], *, on_spark: Callable[[str], bool],
                done: Callable[[str, Any], None] | None = None) -> tuple[dict[str, Any], int]:
    """``work(source)`` for every source; returns (results by source, in sorted order; the most Spark
    sources that were in flight at once).

    Sources for which ``on_spark(source)`` holds run in up to ``spark.concurrent_sources`` threads, so
    their Spark jobs share the task slots: one source's small job (a few shards, a few tasks) no longer
    leaves the rest of a cluster idle while the driver plans the next. The others run in this thread
    meanwhile (their work is the driver's own). Each source's result is a function of its data, so the
    order they finish in changes nothing; ``done(source, result)`` is called in this thread as each
    finishes (progress lines). Errors: once every source has stopped, the first failing source's error
    (in sorted order) is raised. Cost: one thread per concurrent source on the driver; nothing when
    ``spark.concurrent_sources`` is 1 or no source is on Spark."""
    import concurrent.futures as cf
    import threading

    names = sorted(sources)
    remote = [s for s in names if on_spark(s)]
    local = [s for s in names if s not in remote]
    results: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}
    width = min(len(remote), max(1, int(ctx.config.spark.concurrent_sources)))
    in_flight, most, lock = [0], [0], threading.Lock()

    def tracked(source: str):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        try:
            return work(source)
        finally:
            with lock:
                in_flight[0] -= 1

    def settle(source: str, run: Callable[[], Any]) -> None:
        try:
            results[source] = run()
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the other sources stopped
            errors[source] = exc
            return
        if done is not None:
            done(source, results[source])

    if width <= 1:
        for source in names:
            settle(source, (lambda s=source: tracked(s)) if source in remote else (lambda s=source: work(s)))
            if errors:
                break
    else:
        ctx.spark()  # one session, made in this thread (signal handlers live here), before any thread asks
        with cf.ThreadPoolExecutor(max_workers=width, thread_name_prefix="mixweave-source") as pool:
            futures = {pool.submit(tracked, s): s for s in remote}
            for source in local:
                settle(source, lambda s=source: work(s))
            for future in cf.as_completed(futures):
                settle(futures[future], future.result)
    if errors:
        raise errors[min(errors)]
    return {s: results[s] for s in names}, most[0]


@dataclass(frozen=True)
class Stage:
    name: str
    inputs: tuple[str, ...] | Callable[[RunConfig], tuple[str, ...]]
    version: int
    config_slice: Callable[[RunConfig], Any]
    run: Callable[[StageContext, Path], StageResult]
    extra_fingerprint: Callable[[RunConfig], Any] = lambda config: None
    enabled: Callable[[RunConfig], bool] = lambda config: True
    describe: str = ""


def stage_inputs(stage: Stage, config: RunConfig) -> tuple[str, ...]:
    """A stage's inputs: fixed, or chosen by the config (e.g. mix reads pack only when ICP runs)."""
    return tuple(stage.inputs(config)) if callable(stage.inputs) else tuple(stage.inputs)


@dataclass
class StageReport:
    name: str
    status: str  # "ran" | "skipped" | "disabled"
    seconds: float
    path: Path


def stage_fingerprint(stage: Stage, ctx: StageContext) -> tuple[str, dict]:
    inputs = {}
    for name in stage_inputs(stage, ctx.config):
        artifact = ctx.artifact(name)
        if read_manifest(artifact) is None:
            raise ConfigError(f"stage {stage.name} needs {name} at {artifact}, which has no {MANIFEST_NAME}; run {name} first")
        inputs[name] = manifest_sha256(artifact)
    payload = {"config": stage.config_slice(ctx.config), "extra": stage.extra_fingerprint(ctx.config)}
    return fingerprint(stage.name, stage.version, payload, inputs), inputs


def run_stage(stage: Stage, ctx: StageContext, *, force: bool = False) -> StageReport:
    started = time.perf_counter()
    final = ctx.artifact(stage.name)
    value, inputs = stage_fingerprint(stage, ctx)
    existing = read_manifest(final) if final.exists() else None
    if existing is not None and existing.get("fingerprint") == value and not force:
        LOG.info("stage %s: up to date, skipped", stage.name)
        return StageReport(stage.name, "skipped", time.perf_counter() - started, final)
    LOG.info("stage %s: running", stage.name)
    with atomic_stage_dir(final) as tmp:
        fault_point(stage.name, "start")
        with spark_progress(None, stage.name):  # tasks done / total, rate, ETA of any Spark work the stage runs
            result = stage.run(ctx, tmp)
        Interrupt.check()  # a Ctrl-C swallowed inside a finalizer during the stage: do not commit it
        fault_point(stage.name, "before_manifest")
        seconds = round(time.perf_counter() - started, 3)
        manifest = build_manifest(
            stage=stage.name,
            stage_version=stage.version,
            config=stage.config_slice(ctx.config),
            fingerprint_value=value,
            inputs={name: {"path": os.path.relpath(ctx.artifact(name), final), "sha256": sha} for name, sha in inputs.items()},
            root=tmp,
            counts=result.counts,
            drops=result.drops,
            timings={"total_s": seconds, **result.timings},
            extra=result.extra,
        )
        write_json_atomic(tmp / MANIFEST_NAME, manifest)
    return StageReport(stage.name, "ran", time.perf_counter() - started, final)


def fault_point(stage: str, where: str) -> None:
    """Test hook: ``MIXWEAVE_FAULT=stage:where`` kills the process at that point (crash/resume tests)."""
    if os.environ.get("MIXWEAVE_FAULT") == f"{stage}:{where}":
        LOG.error("fault injection: killing the process at %s:%s", stage, where)
        os._exit(77)


def plan_order(stages: dict[str, Stage], wanted: list[str] | None, config: RunConfig) -> list[Stage]:
    """Topological order of the wanted stages and everything they need."""
    if wanted:
        unknown = [name for name in wanted if name not in stages]
        if unknown:
            raise ConfigError(f"unknown stage {unknown[0]!r}: choose from {', '.join(stages)}")
    order: list[Stage] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for dep in stage_inputs(stages[name], config):
            visit(dep)
        order.append(stages[name])

    for name in wanted or list(stages):
        visit(name)
    return order


def run_stages(
    stages: dict[str, Stage], config: RunConfig, *, wanted: list[str] | None = None, force: bool = False,
    on_report: Callable[[StageReport], None] | None = None, overrides: dict[str, Path] | None = None,
) -> list[StageReport]:
    ctx = StageContext(config=config, out=Path(config.out), overrides=dict(overrides or {}))
    reports = []
    plan = plan_order(stages, wanted, config)
    with contextlib.ExitStack() as held:
        # One writer per run folder (and per pinned artifact folder) for the whole run: a second
        # run on the same folder fails at once instead of deleting this one's temporary folders.
        for folder in sorted({ctx.out, *(ctx.artifact(s.name).parent for s in plan)}, key=str):
            held.enter_context(hold_folder(folder))
        for stage in plan:
            Interrupt.check()
            if not stage.enabled(config):
                report = StageReport(stage.name, "disabled", 0.0, ctx.artifact(stage.name))
            else:  # --force re-runs the stages asked for, not everything they depend on
                report = run_stage(stage, ctx, force=force and (not wanted or stage.name in wanted))
            reports.append(report)
            if on_report:
                on_report(report)
    return reports
