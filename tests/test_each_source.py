"""``runner.each_source``: the per-source loop of knn, dedup, order and pack. Spark-path sources run in up
to ``spark.concurrent_sources`` threads, the others in the calling thread; results come back in source
order whatever order they finish in, and the first failing source's error is raised once all stopped.
The stages on real Spark jobs: tests/test_jobs_knn.py (``distributed_run``'s three sources in flight
together on a one-core cluster, every stage's bytes equal to the in-process path)."""

from __future__ import annotations

import threading
import time
import types

import pytest

from mixweave.pipeline.runner import each_source


def context(concurrent: int):
    made = []
    ctx = types.SimpleNamespace(config=types.SimpleNamespace(spark=types.SimpleNamespace(concurrent_sources=concurrent)),
                                spark=lambda: made.append(threading.current_thread().name))
    return ctx, made


SOURCES = {"c": 3, "a": 1, "d": 4, "b": 2}


def test_spark_sources_overlap_and_results_keep_source_order():
    ctx, made = context(4)
    started = threading.Barrier(3, timeout=10)  # the three Spark sources must be in flight together
    threads, finished = {}, []

    def work(source):
        threads[source] = threading.current_thread().name
        if source != "b":
            started.wait()
            time.sleep(0.05 * SOURCES[source])  # later sources finish first... a: 0.05 s, d: 0.2 s
        return SOURCES[source] * 10

    results, at_once = each_source(ctx, SOURCES, work, on_spark=lambda s: s != "b",
                                   done=lambda s, r: finished.append(s))
    assert list(results) == ["a", "b", "c", "d"] and results == {"a": 10, "b": 20, "c": 30, "d": 40}
    assert at_once == 3 and sorted(finished) == ["a", "b", "c", "d"]
    assert threads["b"] == threading.current_thread().name  # in process: the caller's thread
    assert all(threads[s] != threads["b"] for s in "acd")
    assert made == [threading.current_thread().name]  # one session, made before any thread asked


def test_one_at_a_time_is_the_plain_loop():
    ctx, made = context(1)
    seen = []
    results, at_once = each_source(ctx, SOURCES, lambda s: seen.append(s) or s.upper(), on_spark=lambda s: True)
    assert seen == ["a", "b", "c", "d"] and results == {"a": "A", "b": "B", "c": "C", "d": "D"} and at_once == 1
    assert made == []  # the session comes when a source asks for it


def test_the_first_failing_source_is_raised_after_the_others_stop():
    ctx, _ = context(4)
    stopped = []

    def work(source):
        if source in ("c", "d"):
            raise ValueError(f"bad {source}")
        time.sleep(0.1)
        stopped.append(source)
        return source

    with pytest.raises(ValueError, match="bad c"):
        each_source(ctx, SOURCES, work, on_spark=lambda s: s != "b")
    assert sorted(stopped) == ["a", "b"]
    ctx, _ = context(1)
    with pytest.raises(ValueError, match="bad c"):  # one at a time: stops at the first failure
        each_source(ctx, SOURCES, work, on_spark=lambda s: True)


def test_ctrl_c_in_the_calling_thread_propagates_once_the_spark_sources_stop():
    """A KeyboardInterrupt (Ctrl-C) raised while this thread works on an in-process source is not
    collected as a source's error: it propagates as itself after the Spark-source threads return (in a
    real run PySpark's SIGINT handler has cancelled their jobs; here they finish). By hand, ``mixweave
    run`` interrupted while dedup ran four Spark sources: exit 130, one line, no temporary folder."""
    ctx, _ = context(4)
    finished = []

    def work(source):
        if source == "b":
            raise KeyboardInterrupt
        time.sleep(0.2)
        finished.append(source)
        return source

    with pytest.raises(KeyboardInterrupt):
        each_source(ctx, SOURCES, work, on_spark=lambda s: s != "b")
    assert sorted(finished) == ["a", "c", "d"]
