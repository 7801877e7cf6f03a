"""pytest plugin of bench/suite_cpu.py: the machine's busy CPU seconds around each test (setup + call +
teardown), written as JSON rows (test file, busy CPU-s, wall s) to ``$SUITE_CPU_ROWS.<pid>`` at the end.
Under pytest-xdist the two workers' tests overlap in time, so a test's busy CPU includes the other
worker's meanwhile: by file, the figures say where the suite spends its time, not exclusive costs."""

from __future__ import annotations

import json
import os
import time

import pytest

TICK = os.sysconf("SC_CLK_TCK")
ROWS: list[tuple[str, float, float]] = []


def _cpu_ticks() -> list[int]:
    """``/proc/stat``'s all-core CPU line: user, nice, system, idle, iowait, irq, softirq, steal, ..."""
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:]]


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores; idle and iowait left out)."""
    values = _cpu_ticks()
    return (sum(values) - values[3] - values[4]) / TICK


def steal_seconds() -> float:
    """CPU seconds the hypervisor gave other guests since boot (all cores; counted in busy_seconds too)."""
    values = _cpu_ticks()
    return values[7] / TICK if len(values) > 7 else 0.0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    busy0, wall0 = busy_seconds(), time.time()
    yield
    ROWS.append((item.nodeid.split("::")[0], busy_seconds() - busy0, time.time() - wall0))


def pytest_sessionfinish(session):
    if ROWS:  # one file per process: under pytest-xdist each worker writes its own (the controller none)
        with open(f"{os.environ['SUITE_CPU_ROWS']}.{os.getpid()}", "w") as f:
            json.dump(ROWS, f)
