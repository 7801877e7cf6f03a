"""Where the test suite's CPU goes: every process's CPU seconds by kind, and system CPU by test file.

    .venv/bin/python bench/suite_cpu.py                       # the whole suite (make test's pytest, -n 2)
    .venv/bin/python bench/suite_cpu.py tests/test_e2e.py     # any pytest arguments
    .venv/bin/python bench/suite_cpu.py --json bench/suite-cpu.json

The suite is CPU-bound on 2 cores (``make test`` runs two pytest-xdist workers, which keep both busy),
so its wall time is bounded below by its CPU seconds / cores: this says which processes spend them.
Run it on an idle machine.

* **processes**: a sampler thread reads ``/proc/<pid>/stat`` of every process every 0.3 s (CPU =
  utime + stime, minus what the process had when the run started) and groups them: Spark processes by
  bench/scale.py's roles (PySpark-session JVMs of pytest or of a CLI run, other driver JVMs, standalone
  master/worker daemons, executors, Python daemons and workers; each JVM also with the Python processes
  under it), the pytest process, ``mixweave`` CLI subprocesses, others. A process
  that lives under 0.3 s can be missed (a lower bound); Python workers are forked by a daemon and counted
  each on its own.
* **test files**: a pytest plugin records the machine's busy CPU seconds (``/proc/stat``, all cores)
  around each test's setup + call + teardown, summed by file, so background work (the e2e scenarios,
  started with the session) lands in whichever file runs meanwhile (usually the first one).

Cost: the sampler uses ~1 % of a core. No timing is asserted anywhere; this only measures.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import classify, descendants  # noqa: E402 - bench/scale.py's Spark process roles
from suite_cpu_plugin import TICK, busy_seconds, steal_seconds  # noqa: E402


def read_processes() -> dict[str, tuple[float, str, str, str]]:
    """``pid:starttime`` -> (CPU seconds, command line, parent pid, pid) of every live process (keyed by
    start time too: Spark's threads cycle through the 32,768 pids within one suite)."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        found[f"{pid}:{fields[19]}"] = ((int(fields[11]) + int(fields[12])) / TICK, cmd, fields[1], pid)
    return found


class Sampler(threading.Thread):
    """Polls every process's CPU until stopped; ``seen`` keeps each process's last reading and its last
    non-empty command line (an exited, unreaped process reads as an empty one; a JVM that spark-class
    exec'ed reads as bash until the exec)."""

    def __init__(self, interval: float = 0.3):
        super().__init__(daemon=True)
        self.interval, self.stopped = interval, threading.Event()
        self.base = {key: cpu for key, (cpu, *_rest) in read_processes().items()}
        self.seen: dict[str, list] = {}

    def poll(self) -> None:
        for key, (cpu, cmd, ppid, pid) in read_processes().items():
            old = self.seen.get(key)
            self.seen[key] = [cpu - self.base.get(key, 0.0), cmd or (old[1] if old else ""), ppid, pid]

    def run(self) -> None:
        while not self.stopped.is_set():
            self.poll()
            self.stopped.wait(self.interval)
        self.poll()


MAKE_TEST_ARGS = ["-n", "2"]
"""The pytest arguments ``make test`` adds (two pytest-xdist workers): the default when none are given."""

OTHER_KINDS = (("mixweave.cli", "mixweave CLI"), ("mixweave/submit.py", "mixweave CLI (spark-submit)"),
               ("chromium", "chromium"), ("transformers serve", "transformers serve"),
               ("exec(eval(sys.stdin.readline()))", "pytest"), ("pytest", "pytest"))
"""First match wins: ``pytest`` (the pytest process and its xdist workers, which execnet starts with
``python -c "...exec(eval(sys.stdin.readline()))"``) last, since the tests' subprocesses name files
under /tmp/pytest-of-*."""


def kind(pid: int, table: dict[int, tuple[int, str]]) -> str:
    """A Spark process's role (``scale.classify``; a driver JVM that runs PySpark's gateway is the
    PySpark session of pytest or of a CLI subprocess), else the program the suite started."""
    role = classify(pid, table)
    cmd = table[pid][1]
    if role == "driver_jvm" and "pyspark-shell" in cmd:
        return "pyspark_session_jvm"
    if role != "other":
        return role
    name = next((name for marker, name in OTHER_KINDS if marker in cmd), None)
    return name or "other: " + " ".join(Path(part).name for part in cmd.split(" ")[:2])


def summarize(seen: dict[str, list]) -> dict:
    """CPU seconds by process kind, and each Spark JVM with the Python workers under it."""
    table = {int(pid): (int(ppid), cmd) for _cpu, cmd, ppid, pid in seen.values()}
    cpu_of = {int(pid): cpu for cpu, _cmd, _ppid, pid in seen.values()}
    kinds: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    jvms = []
    for pid in table:
        if cpu_of[pid] <= 0 or pid == os.getpid():
            continue
        name = kind(pid, table)
        kinds[name][0] += cpu_of[pid]
        kinds[name][1] += 1
        if name.endswith("_jvm") or name in ("worker_daemon", "master_daemon"):
            jvms.append((pid, name))
    trees = {f"{name} {pid}": cpu_of[pid] + sum(cpu_of[p] for p in descendants(pid, table)
                                                if kind(p, table).startswith("python_"))
             for pid, name in jvms}
    return {"total_cpu_s": round(sum(v[0] for v in kinds.values()), 1),
            "by_kind": {k: {"cpu_s": round(v[0], 1), "processes": v[1]} for k, v in sorted(kinds.items(), key=lambda x: -x[1][0])},
            "jvm_trees": {label: round(c, 1) for label, c in sorted(trees.items(), key=lambda x: -x[1])}}


def speed_probe(n: int = 30_000_000) -> float:
    """Seconds one core takes for a fixed pure-Python loop: this machine's speed drifts (a shared host;
    the same loop took 2.45 s and 3.28 s half an hour apart on 2026-12-03, and the unchanged suite 246 s
    and 287 s), so a suite figure is comparable to another only next to this probe."""
    started = time.perf_counter()
    total = 0
    for i in range(n):
        total += i
    return round(time.perf_counter() - started, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args, pytest_args = parser.parse_known_args()
    import subprocess
    import tempfile

    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        rows_path = Path(tmp) / "rows.json"
        pytest_args = pytest_args or MAKE_TEST_ARGS
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(here), os.environ.get("PYTHONPATH")])),
                   SUITE_CPU_ROWS=str(rows_path))
        probe_before = speed_probe()
        sampler = Sampler()
        sampler.start()
        busy0, wall0, steal0 = busy_seconds(), time.time(), steal_seconds()
        proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "suite_cpu_plugin",
                                 *pytest_args], cwd=here.parent, env=env)
        code = proc.wait()
        wall, busy, steal = time.time() - wall0, busy_seconds() - busy0, steal_seconds() - steal0
        sampler.stopped.set()
        sampler.join()
        probe_after = speed_probe()
        rows = [row for part in sorted(Path(tmp).glob("rows.json.*")) for row in json.loads(part.read_text())]
    files: dict[str, list] = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for path, cpu, seconds in rows:
        files[path][0] += cpu
        files[path][1] += seconds
        files[path][2] += 1
    result = {"pytest_exit": code, "wall_s": round(wall, 1), "machine_busy_cpu_s": round(busy, 1),
              "cores_busy_on_average": round(busy / wall, 2) if wall else 0.0,
              "speed_probe_s": {"before": probe_before, "after": probe_after}, "steal_cpu_s": round(steal, 1),
              **summarize(sampler.seen),
              "by_test_file": {p: {"busy_cpu_s": round(c, 1), "wall_s": round(s, 1), "tests": n}
                               for p, (c, s, n) in sorted(files.items(), key=lambda x: -x[1][0])}}
    print(f"\nwall {result['wall_s']} s, machine busy {result['machine_busy_cpu_s']} CPU-s "
          f"({result['cores_busy_on_average']} cores on average); processes seen: {result['total_cpu_s']} CPU-s")
    print(f"machine speed probe {probe_before} s before, {probe_after} s after (lower is faster); "
          f"steal {result['steal_cpu_s']} CPU-s")
    print("\nCPU-s  procs  process kind")
    for name, v in result["by_kind"].items():
        print(f"{v['cpu_s']:6.1f} {v['processes']:6d}  {name}")
    print("\nCPU-s  Spark JVM with the Python workers under it")
    for name, cpu in result["jvm_trees"].items():
        print(f"{cpu:6.1f}  {name}")
    print("\nbusy CPU-s  wall s  tests  test file (first 25)")
    for path, v in list(result["by_test_file"].items())[:25]:
        print(f"{v['busy_cpu_s']:10.1f} {v['wall_s']:7.1f} {v['tests']:6d}  {path}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
