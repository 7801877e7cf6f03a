"""Progress reporting: periodic log lines off a TTY (done/total, rate, ETA), thread safety, and
the Spark status poller on a real local Spark job."""

from __future__ import annotations

import logging
import re
import threading
import time

import pytest

from mixweave.data.progress import Progress, describe, spark_progress, use_bar

LOGGER = "mixweave.progress"


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_log_lines_carry_count_rate_and_eta(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with Progress(20, unit="doc", label="embed", interval=0.0, bar=False) as p:
        for _ in range(4):
            time.sleep(0.01)
            p.update(5, tok=100)
    lines = _lines(caplog)
    assert len(lines) == 5  # one per update (interval 0) and the closing line
    assert lines[0].startswith("embed: 5/20 doc (25%)") and "doc/s" in lines[0] and "tok/s" in lines[0]
    assert re.search(r"ETA \d+s", lines[0])
    assert lines[-1].startswith("embed: 20/20 doc (100%)") and lines[-1].endswith("(done)")
    assert "ETA" not in lines[-1]


def test_lines_wait_for_the_interval(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with Progress(1000, unit="step", label="train", interval=3600, bar=False) as p:
        for _ in range(1000):
            p.update()
    assert _lines(caplog) == []  # nothing before the first interval, and short work ends quietly


def test_updates_from_many_threads_are_all_counted():
    with Progress(None, label="t", interval=3600, bar=False) as p:
        threads = [threading.Thread(target=lambda: [p.update() for _ in range(2000)]) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert p.done == 8000


def test_describe_formats_rate_and_eta():
    assert describe("x", 30, 120, "tasks", 10.0) == "x: 30/120 tasks (25%), 3.00 tasks/s, ETA 30s, elapsed 10s"
    assert describe("x", 0, 10, "tasks", 5.0).endswith("ETA ?, elapsed 5s")
    assert describe("x", 7, None, "steps", 2.0, {"tok": 700}) == "x: 7 steps, 3.50 steps/s, 350 tok/s, elapsed 2s"
    assert "ETA 1h00m" in describe("x", 1, 3601, "it", 1.0)


def test_tqdm_disable_turns_the_bar_off(monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not use_bar()
    monkeypatch.setenv("TQDM_DISABLE", "")
    assert use_bar()


@pytest.mark.spark
def test_spark_poller_reports_tasks_of_a_real_job(spark, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)

    def slow(rows):  # 3 waves of 0.4 s on local[2]'s 2 slots: polls every 0.2 s see tasks finish and run
        time.sleep(0.4)
        return [sum(rows)]

    with spark_progress(spark, "toy", poll=0.2, interval=0.0) as progress:
        with spark_progress(spark, "inner") as inner:  # nested blocks stay quiet
            result = spark.sparkContext.parallelize(range(40), 6).mapPartitions(slow).collect()
    assert inner is None and sum(result) == sum(range(40))
    assert progress.total == 6 and progress.done == 6
    lines = _lines(caplog)
    assert lines and all(line.startswith("toy: ") for line in lines)
    running = [line for line in lines if "ETA" in line]
    assert running and re.search(r"toy: \d/6 tasks \(\d+%\), [\d.]+ tasks/s, ETA", running[0])
    assert lines[-1].startswith("toy: 6/6 tasks (100%)") and lines[-1].endswith("(done)")


@pytest.mark.spark
def test_spark_poller_finds_the_active_session_and_leaves_out_skipped_stages(spark, caplog):
    import pandas as pd

    def slow(batches):
        for batch in batches:
            time.sleep(0.3)
            yield batch

    caplog.set_level(logging.INFO, logger=LOGGER)
    frame = spark.createDataFrame(pd.DataFrame({"unit": range(20)})).repartitionByRange(5, "unit")
    with spark_progress(None, "any", poll=0.1, interval=0.0) as progress:
        # range bounds are sampled by an earlier job; the final job lists that shuffle stage as skipped
        rows = frame.mapInArrow(slow, "unit long").collect()
    assert len(rows) == 20
    assert progress.done == progress.total and progress.total >= 5
    assert _lines(caplog)[-1].startswith(f"any: {progress.total}/{progress.total} tasks (100%)")


@pytest.mark.spark
def test_a_finished_job_is_asked_about_once(spark):
    """spark_tasks asks the JVM about a job until it has seen it end (then once more for its stages'
    final counts, in the same poll) and never again: a poll's cost follows the running jobs."""
    from mixweave.data.progress import spark_tasks

    class CountingContext:
        def __init__(self, sc):
            self.sc, self.asked = sc, []

        def statusTracker(self):
            tracker, asked = self.sc.statusTracker(), self.asked

            class Counting:
                def __getattr__(self, name):
                    return getattr(tracker, name)

                def getJobInfo(self, job_id):
                    asked.append(job_id)
                    return tracker.getJobInfo(job_id)

            return Counting()

    sc = spark.sparkContext
    sc.setJobGroup("finished-once", "test")
    try:
        assert sc.parallelize(range(12), 3).count() == 12
        assert sc.parallelize(range(8), 2).count() == 8
        job_ids = set(sc.statusTracker().getJobIdsForGroup("finished-once"))
    finally:
        sc.setJobGroup(None, None)  # later jobs of the session carry no group
    assert len(job_ids) == 2
    # the status tracker learns a job's end from Spark's listener bus, after the action has returned
    # (seen once: one job still RUNNING there); wait until both read as ended, as the claim is about ended jobs
    deadline = time.monotonic() + 60
    while any(sc.statusTracker().getJobInfo(j).status not in ("SUCCEEDED", "FAILED") for j in job_ids):
        assert time.monotonic() < deadline, "the jobs never read as ended in the status tracker"
        time.sleep(0.05)
    counting, stages, finished = CountingContext(sc), {}, set()
    assert spark_tasks(counting, set(job_ids), stages, finished) == 0
    assert finished == job_ids and sorted(counting.asked) == sorted(job_ids)
    assert sorted(stages.values()) == [(2, 2), (3, 3)]
    assert spark_tasks(counting, set(job_ids), stages, finished) == 0
    assert len(counting.asked) == 2 and sorted(stages.values()) == [(2, 2), (3, 3)]
    assert spark_tasks(counting, set(job_ids), {}, None) == 0 and len(counting.asked) == 4  # without: every poll
