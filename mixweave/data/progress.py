"""Progress for long work: a live bar on a terminal, periodic log lines everywhere else.

:class:`Progress` counts items (documents, steps) that the caller reports with ``update(n)``. On a
TTY (stderr) it draws a tqdm bar, unless ``TQDM_DISABLE`` is set; otherwise it logs one line at
most every ``interval`` seconds through the ``mixweave.progress`` logger, with done/total, rate and
ETA, plus a last line when the work ends. :func:`spark_progress` gives the same for Spark work:
a daemon thread polls the driver's status tracker and reports completed/total tasks of the jobs
that ran while it was open. Both are safe to update from several threads.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

LOG = logging.getLogger("mixweave.progress")

#: seconds between two log lines when no bar is drawn (``MIXWEAVE_PROGRESS_INTERVAL`` overrides)
DEFAULT_INTERVAL = float(os.environ.get("MIXWEAVE_PROGRESS_INTERVAL", "15"))
#: seconds between two polls of Spark's status tracker
DEFAULT_POLL = 2.0


def use_bar() -> bool:
    """A live bar only on a terminal, and never when ``TQDM_DISABLE`` is set to a true value."""
    disabled = os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")
    return not disabled and sys.stderr.isatty()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def describe(label: str, done: float, total: float | None, unit: str, elapsed: float,
             extra: dict[str, float] | None = None) -> str:
    """One progress line: ``label: done/total unit (pct), rate unit/s[, rate extra/s], ETA``."""
    rate = done / elapsed if elapsed > 0 else 0.0
    text = f"{label}: {done:,.0f}"
    if total:
        text += f"/{total:,.0f} {unit} ({100 * done / total:.0f}%)"
    else:
        text += f" {unit}"
    text += f", {rate:,.2f} {unit}/s"
    for name, amount in (extra or {}).items():
        text += f", {amount / elapsed if elapsed > 0 else 0.0:,.0f} {name}/s"
    if total and done < total:
        text += f", ETA {_duration((total - done) / rate)}" if rate > 0 else ", ETA ?"
    return text + f", elapsed {_duration(elapsed)}"


class Progress:
    """``with Progress(total, unit="doc", label="embed") as p: ... p.update(n)``.

    ``update(n, **amounts)`` adds ``n`` items and optional side counters shown as rates (e.g.
    ``p.update(1, tok=4096)`` -> "... 1,234 tok/s"). ``interval`` is the seconds between log lines.
    """

    def __init__(self, total: int | None, unit: str = "it", label: str = "progress", *,
                 interval: float | None = None, logger: logging.Logger | None = None, bar: bool | None = None):
        self.total, self.unit, self.label = total, unit, label
        self.interval = DEFAULT_INTERVAL if interval is None else float(interval)
        self.logger = logger or LOG
        self.bar = use_bar() if bar is None else bar
        self.done = 0
        self.amounts: dict[str, float] = {}
        self._lock = threading.Lock()
        self._tqdm: Any = None
        self._started = self._last_line = time.perf_counter()

    def __enter__(self) -> "Progress":
        self._started = self._last_line = time.perf_counter()
        if self.bar:
            from tqdm.auto import tqdm

            self._tqdm = tqdm(total=self.total, unit=self.unit, desc=self.label, dynamic_ncols=True)
        return self

    def update(self, n: int = 1, **amounts: float) -> None:
        """Count ``n`` more items (and side amounts); may log a line or redraw the bar."""
        with self._lock:
            self.done += n
            for name, value in amounts.items():
                self.amounts[name] = self.amounts.get(name, 0.0) + value
            if self._tqdm is not None:
                self._tqdm.update(n)
                if self.amounts:
                    self._tqdm.set_postfix_str(self._rates(), refresh=False)
                return
            now = time.perf_counter()
            if now - self._last_line >= self.interval:
                self._last_line = now
                self.logger.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """The current progress line."""
        elapsed = (now or time.perf_counter()) - self._started
        return describe(self.label, self.done, self.total, self.unit, elapsed, self.amounts)

    def _rates(self) -> str:
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        return ", ".join(f"{v / elapsed:,.0f} {k}/s" for k, v in self.amounts.items())

    def __exit__(self, exc_type, exc, tb) -> None:
        with self._lock:
            if self._tqdm is not None:
                self._tqdm.close()
            elif time.perf_counter() - self._started >= self.interval:  # short work stays quiet
                self.logger.info("%s%s", self.line(), " (stopped by an error)" if exc_type else " (done)")


# -- Spark -----------------------------------------------------------------------------------------

_ACTIVE = [0]  # open spark_progress blocks: a process has one SparkContext, so inner blocks stay quiet
_ACTIVE_LOCK = threading.Lock()


def _context(spark: Any) -> Any:
    """The SparkContext of a session or context, or the active one when ``spark`` is None."""
    if spark is None:
        # Never import pyspark from the poller thread: doing so while the main thread is importing
        # pyspark.sql (in get_spark) breaks that import ("partially initialized module"). A
        # SparkContext can only exist once pyspark.core.context has been fully imported anyway.
        context_module = sys.modules.get("pyspark.core.context") or sys.modules.get("pyspark.context")
        cls = getattr(context_module, "SparkContext", None)
        return getattr(cls, "_active_spark_context", None)
    return getattr(spark, "sparkContext", spark)


def spark_tasks(sc: Any, job_ids: set[int], stages: dict[int, tuple[int, int]],
                finished: set[int] | None = None) -> int:
    """Add the active jobs to ``job_ids`` and refresh ``stages`` (stage id -> tasks, completed).
    Returns how many of the jobs in ``job_ids`` still run. A job seen ended is added to ``finished``
    (when given) after one last refresh of its stages and never asked about again, so a poll costs
    O(running jobs' stages) calls to the JVM, not O(every job the block has run): a stage running
    hundreds of small jobs polled them all every ``poll`` seconds."""
    tracker = sc.statusTracker()
    job_ids.update(tracker.getActiveJobsIds())
    finished = set() if finished is None else finished
    running: set[int] = set()
    n_running = 0
    for job_id in job_ids - finished:
        job = tracker.getJobInfo(job_id)
        if job is None:
            continue
        still = job.status not in ("SUCCEEDED", "FAILED")
        n_running += still
        for stage_id in job.stageIds:
            stage = tracker.getStageInfo(stage_id)
            if stage is not None:
                stages[stage_id] = (stage.numTasks, stage.numCompletedTasks)
            if still:
                running.add(stage_id)
        if not still:
            finished.add(job_id)
    # a finished job's stage without a completed task was skipped (an earlier job wrote its output)
    for stage_id in [s for s, (_, done) in stages.items() if done == 0 and s not in running]:
        del stages[stage_id]
    return n_running


class _SparkPoller:
    """The daemon thread behind :func:`spark_progress`."""

    def __init__(self, sc_source: Callable[[], Any], label: str, poll: float, interval: float, bar: bool):
        self.sc_source, self.label, self.poll = sc_source, label, poll
        self.progress = Progress(None, "tasks", label, interval=interval, bar=bar)
        self.job_ids: set[int] = set()
        self.finished: set[int] = set()
        self.stages: dict[int, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"spark-progress-{label}", daemon=True)

    def start(self) -> None:
        self.progress.__enter__()
        self._thread.start()

    def stop(self, exc_type: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        deadline = time.perf_counter() + 5.0  # the tracker learns of finished tasks a moment late
        try:
            while self.tick(final=True) and time.perf_counter() < deadline:
                time.sleep(0.1)
        except Exception as exc:  # noqa: BLE001 - e.g. the session was stopped inside the block
            LOG.debug("spark progress: %s", exc)
        if self.job_ids:
            self.progress.__exit__(exc_type, None, None)
        elif self.progress._tqdm is not None:
            self.progress._tqdm.close()

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - a progress line must never break the work
                LOG.debug("spark progress: %s", exc)

    def tick(self, final: bool = False) -> int:
        """Poll once; report completed/total tasks of every job seen while open. Returns how
        many of those jobs still run."""
        sc = self.sc_source()
        if sc is None or getattr(sc, "_jsc", None) is None:
            return 0
        active = spark_tasks(sc, self.job_ids, self.stages, self.finished)
        if not self.stages or (not active and not final):
            return active
        total = sum(t for t, _ in self.stages.values())
        done = sum(c for _, c in self.stages.values())
        p = self.progress
        with p._lock:
            p.total = total
            step = done - p.done
            p.done = done
        if p._tqdm is not None:
            p._tqdm.total = total
            p._tqdm.update(step)
        elif not final:
            p.update(0)  # logs when the interval has passed
        return active


@contextmanager
def spark_progress(spark: Any = None, label: str = "spark", *, poll: float = DEFAULT_POLL,
                   interval: float | None = None, bar: bool | None = None) -> Iterator[Progress | None]:
    """Report Spark task progress while the block runs (``spark``: a session, a context, or None
    for whatever context is active at each poll, so a runner can wrap every stage). Nested
    blocks report once, from the outermost (a process has one SparkContext). Yields the
    :class:`Progress` (None in a nested block)."""
    with _ACTIVE_LOCK:
        nested = _ACTIVE[0] > 0
        _ACTIVE[0] += 1
    if nested:
        try:
            yield None
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE[0] -= 1
        return
    sc = _context(spark) if spark is not None else None
    poller = _SparkPoller(lambda: sc if sc is not None else _context(None), label, poll,
                          DEFAULT_INTERVAL if interval is None else interval, use_bar() if bar is None else bar)
    poller.start()
    exc_type = None
    try:
        yield poller.progress
    except BaseException as exc:
        exc_type = type(exc)
        raise
    finally:
        poller.stop(exc_type)
        with _ACTIVE_LOCK:
            _ACTIVE[0] -= 1
