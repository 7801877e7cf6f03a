"""The ICP chain at corpus scale (issue 12): ingest -> pack on a loopback standalone Spark cluster,
measured side by side at several corpus sizes in one run.

    .venv/bin/python bench/scale.py --docs 100000,300000,1000000 --workdir /big/disk/scale   # make bench-scale
    .venv/bin/python bench/scale.py --docs 10000,20000 --shard-rows 5000 --workdir /tmp/scale   # a smoke run

For each size N:

1. **Corpus.** ``bench/synthetic.py`` writes a seeded clustered corpus (topics over real words,
   log-normal lengths, ~2 % near-duplicates) as parquet shards, cached under
   ``WORKDIR/corpus/<spec hash>/`` (the run folders under ``WORKDIR/runs/`` are deleted and re-made
   on every run: a finished stage would otherwise be skipped, and measure nothing).
2. **Cluster.** A Spark master and ``--workers`` workers (``--worker-cores`` cores, ``--worker-memory``
   each) on 127.0.0.1, started with the classes pyspark ships (``spark-class ...Master/Worker``, as
   tests/test_e2e.py does); the driver gets ``--driver-memory`` (small on purpose).
3. **Run.** ``mixweave run CONFIG --stage pack`` (ingest, count, embed, knn, dedup, order, pack) with
   ``order.distributed_min_docs: 0`` (every ICP stage on its Spark path), ``order.encoder_backend``
   (``static`` = the model2vec distillation, the fast CPU encoder of the embeddings issue),
   ``order.shard_rows`` (the bounded unit of the sharded artifacts: keep it fixed across sizes), and
   Spark's event log on.
4. **Measured** while it runs (a sampler thread reads ``/proc`` every ``--sample-s`` seconds):
   * the driver's peak RSS: ``VmHWM`` of the ``mixweave run`` process (the Python driver) and of its
     JVM (spark-submit's gateway);
   * the largest task's peak RSS: ``VmHWM`` of every Python worker forked by the executors'
     ``pyspark.daemon`` and of every executor JVM (``CoarseGrainedExecutorBackend``) under the
     worker daemons;
   * per pipeline stage (windows from the runner's ``stage X: running`` / report lines): wall time
     (the stage manifest's ``timings.total_s``), the largest sampled RSS of each role in the window,
     and the CPU seconds of every process of the run (driver, executors, Python workers: utime +
     stime deltas), i.e. the cost on the machine whatever its load;
   * shuffle bytes per pipeline stage: the Spark event log's ``SparkListenerTaskEnd`` events
     (shuffle write bytes, shuffle read local + remote bytes, spills), each task attributed by its
     finish time;
   * quality: recall@k on a sample (the knn manifest), the order manifest's mean adjacent cosine.
5. **Single process.** For N <= ``--single-max-docs`` the same corpus runs again up to ``order``
   with ``distributed_min_docs`` above N (the in-process chain, the old driver-bound path) in its own
   folder (the ingest/count/embed folders are hard-linked from the distributed run, so those stages
   are skipped when their fingerprints match): its adjacent cosine is the reference of the target
   "distributed >= 0.95 x single process", and its driver RSS is the baseline.

The table prints every size side by side with the ratios last/first (targets: driver peak RSS and
cost per document grow <= 1.3x from 10^5 to 10^6; adjacent cosine >= 0.95x single process), then a
projection to 2.35e8 documents (``projection``) next to the ICP paper's figures. ``--json`` writes
everything (default ``bench/results-scale.json``).

Machine note: CPU seconds are the robust cost figure on a shared machine; wall times are upper bounds
when other jobs run (the JSON records the load average before and after each run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from synthetic import CorpusSpec, ensure_corpus, source_names  # noqa: E402

PIPELINE = ("ingest", "count", "embed", "knn", "dedup", "order", "pack")
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
JVM_FLAGS = "-XX:+UseSerialGC"

# ------------------------------------------------------------------------------ /proc sampling


def read_status(pid: int) -> dict[str, int] | None:
    """VmRSS and VmHWM (bytes) of a live process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    out = {}
    for key in ("VmRSS", "VmHWM"):
        m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        out[key] = int(m.group(1)) * 1024 if m else 0
    return out


def read_cpu_s(pid: int) -> float | None:
    """utime + stime of a live process in seconds (None when gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, command line) of every process we can see."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        table[int(entry.name)] = (int(stat[stat.rindex(")") + 2:].split()[1]), cmd)
    return table


def descendants(root: int, table: dict[int, tuple[int, str]]) -> list[int]:
    """All processes under ``root`` (not ``root`` itself)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, stack = [], list(children.get(root, ()))
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, ()))
    return out


def classify(pid: int, table: dict[int, tuple[int, str]]) -> str:
    """Role of a Spark process from its command line (and its parent's, for forked Python workers)."""
    ppid, cmd = table[pid]
    if "CoarseGrainedExecutorBackend" in cmd:
        return "executor_jvm"
    if "deploy.worker.Worker" in cmd:
        return "worker_daemon"
    if "deploy.master.Master" in cmd:
        return "master_daemon"
    if "pyspark.daemon" in cmd or "pyspark/daemon.py" in cmd:
        parent = table.get(ppid, (0, ""))[1]
        return "python_worker" if ("pyspark.daemon" in parent or "pyspark/daemon.py" in parent) else "python_daemon"
    if "pyspark.worker" in cmd or "pyspark/worker.py" in cmd:
        return "python_worker"
    if "org.apache.spark.launcher.Main" in cmd:
        return "launcher"
    if "java" in cmd.split(" ")[0] or "SparkSubmit" in cmd:
        return "driver_jvm"
    return "other"


@dataclass
class Sampler:
    """Polls the driver's process tree and the worker daemons' trees (a thread): per-pid peak RSS
    (VmHWM), per-role sampled RSS and summed CPU seconds over time."""

    driver: int
    workers: list[int]
    interval: float = 0.5
    peaks: dict[int, dict] = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    _cpu_last: dict[int, float] = field(default_factory=dict)
    _cpu_total: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "Sampler":
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> dict:
        table = process_table()
        pids = {self.driver: "driver_python"} if self.driver in table else {}
        for pid in descendants(self.driver, table):
            pids[pid] = classify(pid, table)
        for worker in self.workers:
            for pid in descendants(worker, table):
                role = classify(pid, table)
                pids[pid] = "driver_jvm_child" if role == "driver_jvm" else role
        rss: dict[str, int] = {}
        for pid, role in pids.items():
            status = read_status(pid)
            cpu = read_cpu_s(pid)
            if status is None or cpu is None or not table[pid][1].strip():
                continue  # gone, or exiting (an empty command line would read as "other")
            peak = self.peaks.setdefault(pid, {"role": role, "hwm": 0, "cmd": table[pid][1][:160]})
            if peak["role"] == "other" and role != "other":  # spark-submit's shell execs the driver JVM
                peak.update(role=role, cmd=table[pid][1][:160])
            role = peak["role"]  # sticky: a forked worker stays one while its daemon exits
            peak["hwm"] = max(peak["hwm"], status["VmHWM"], status["VmRSS"])
            rss[role] = max(rss.get(role, 0), status["VmRSS"])
            self._cpu_total += max(0.0, cpu - self._cpu_last.get(pid, 0.0))
            self._cpu_last[pid] = cpu
        row = {"t": time.time(), "rss": rss, "cpu_s": self._cpu_total}
        self.samples.append(row)
        return row

    def peak_by_role(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for peak in self.peaks.values():
            out[peak["role"]] = max(out.get(peak["role"], 0), peak["hwm"])
        return out

    def window(self, t0: float, t1: float) -> dict:
        """Largest sampled RSS per role and CPU seconds spent within [t0, t1]."""
        rows = [s for s in self.samples if t0 <= s["t"] <= t1]
        before = [s for s in self.samples if s["t"] < t0]
        rss: dict[str, int] = {}
        for s in rows:
            for role, value in s["rss"].items():
                rss[role] = max(rss.get(role, 0), value)
        cpu0 = before[-1]["cpu_s"] if before else 0.0
        after = [s for s in self.samples if s["t"] > t1]
        cpu1 = after[0]["cpu_s"] if after else (rows[-1]["cpu_s"] if rows else cpu0)
        return {"max_rss": rss, "cpu_s": round(cpu1 - cpu0, 2)}


# ------------------------------------------------------------------------------ Spark event log


def parse_event_log(path: str | Path) -> list[dict]:
    """One record per finished task of a Spark event log (JSON lines, uncompressed): finish time
    (seconds, epoch), shuffle bytes written / read, spills, peak execution memory."""
    tasks = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if '"SparkListenerTaskEnd"' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:  # the last line of a log whose application died
                continue
            info, metrics = event.get("Task Info", {}), event.get("Task Metrics") or {}
            write = metrics.get("Shuffle Write Metrics") or {}
            read = metrics.get("Shuffle Read Metrics") or {}
            tasks.append({
                "stage_id": event.get("Stage ID"),
                "finish_s": info.get("Finish Time", 0) / 1000.0,
                "shuffle_write_bytes": int(write.get("Shuffle Bytes Written", 0)),
                "shuffle_read_bytes": int(read.get("Remote Bytes Read", 0)) + int(read.get("Local Bytes Read", 0)),
                "spill_bytes": int(metrics.get("Memory Bytes Spilled", 0)) + int(metrics.get("Disk Bytes Spilled", 0)),
                "peak_execution_memory": int(metrics.get("Peak Execution Memory", 0)),
                "failed": bool(info.get("Failed", False)),
            })
    return tasks


def shuffle_by_window(tasks: list[dict], windows: dict[str, tuple[float, float]]) -> dict[str, dict]:
    """Sum the tasks' shuffle figures per pipeline stage (the window holding the task's finish)."""
    out = {name: {"tasks": 0, "shuffle_write_bytes": 0, "shuffle_read_bytes": 0, "spill_bytes": 0,
                  "max_peak_execution_memory": 0, "failed_tasks": 0} for name in windows}
    for task in tasks:
        for name, (t0, t1) in windows.items():
            if t0 <= task["finish_s"] <= t1:
                row = out[name]
                row["tasks"] += 1
                row["failed_tasks"] += task["failed"]
                for key in ("shuffle_write_bytes", "shuffle_read_bytes", "spill_bytes"):
                    row[key] += task[key]
                row["max_peak_execution_memory"] = max(row["max_peak_execution_memory"], task["peak_execution_memory"])
                break
    return out


# ------------------------------------------------------------------------------ projection

PAPER_DOCS = 235_266_464
"""Documents the ICP paper ordered (/work/shared/reference/icp.md: 235,266,464 vectors)."""
PAPER_TRAVERSAL_CPU_H = 12 * 20
"""The paper's graph traversal: 12 h on 20 CPUs (icp.md, "Compute reported per stage")."""
PAPER_SEARCH_GPU_H = 6 * 32
"""The paper's kNN search: 6 h over 32 GPUs (icp.md)."""
GPU_EMBED_DOCS_PER_S = 2_480
"""Measured on one H200 (``bench/gpu.py``, 2026-12-04): the default encoder in torch fp32 at 128
tokens, batch 256, 8,192 documents, the next batch tokenized on a thread while the GPU runs this one.
Bound by tokenizing on the host (one core), so it is per GPU only while each GPU has its own core to
tokenize on. Earlier results JSONs used 14,200, sbert.net's V100 figure for short sentences (their
``gpu_embed_docs_per_s``)."""


def projection(cpu_s_per_doc: dict[str, float], *, n_docs: float = PAPER_DOCS, nodes=(8, 32, 128),
               cores_per_node: int = 32, gpus_per_node: int = 8,
               gpu_embed_docs_per_s: float = GPU_EMBED_DOCS_PER_S) -> dict:
    """Hours per stage for ``n_docs`` documents on each node count, assuming every stage spreads
    evenly over all cores (the distributed paths' design; driver work and stragglers are ignored,
    so these are lower bounds): hours = cpu_s_per_doc x n_docs / (nodes x cores_per_node) / 3600.
    GPU embedding replaces the embed stage by n_docs / (nodes x gpus_per_node x gpu_embed_docs_per_s)."""
    out = {"n_docs": n_docs, "cores_per_node": cores_per_node, "gpus_per_node": gpus_per_node,
           "gpu_embed_docs_per_s": gpu_embed_docs_per_s, "nodes": {}}
    for n in nodes:
        hours = {stage: cost * n_docs / (n * cores_per_node) / 3600 for stage, cost in cpu_s_per_doc.items()}
        gpu = dict(hours)
        if "embed" in gpu:
            gpu["embed"] = n_docs / (n * gpus_per_node * gpu_embed_docs_per_s) / 3600
        out["nodes"][n] = {"cpu_embedding_h": hours, "gpu_embedding_h": gpu,
                           "total_cpu_embedding_h": sum(hours.values()), "total_gpu_embedding_h": sum(gpu.values())}
    if "order" in cpu_s_per_doc:
        out["order_cpu_h"] = cpu_s_per_doc["order"] * n_docs / 3600
        out["paper_traversal_cpu_h"] = PAPER_TRAVERSAL_CPU_H
    return out


# ------------------------------------------------------------------------------ cluster and run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1", SPARK_LOCAL_IP="127.0.0.1",
               TOKENIZERS_PARALLELISM="false", PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    env.pop("MIXWEAVE_FAULT", None)
    return env


class Cluster:
    """A standalone master + workers on loopback (pyspark's own classes), stopped on exit."""

    def __init__(self, work: Path, workers: int, cores: int, memory: str):
        import pyspark

        self.home = Path(pyspark.__file__).parent
        self.work, self.n_workers, self.cores, self.memory = work, workers, cores, memory
        self.port = free_port()
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "Cluster":
        spark_class = str(self.home / "bin" / "spark-class")
        self.work.mkdir(parents=True, exist_ok=True)
        env = dict(run_env(), SPARK_HOME=str(self.home), SPARK_LOG_DIR=str(self.work / "logs"),
                   SPARK_WORKER_DIR=str(self.work / "work"), SPARK_NO_DAEMONIZE="1", SPARK_DAEMON_JAVA_OPTS=JVM_FLAGS)
        self.log = open(self.work / "cluster.log", "w")  # noqa: SIM115 - closed in __exit__
        common = dict(env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                            "--port", str(self.port), "--webui-port", str(free_port())], **common))
        deadline = time.time() + 180
        while not self._listening():
            if time.time() > deadline or self.procs[0].poll() is not None:
                self.__exit__(None, None, None)
                raise RuntimeError(f"the Spark master did not start: see {self.work / 'cluster.log'}")
            time.sleep(0.5)
        for _ in range(self.n_workers):
            self.procs.append(subprocess.Popen(
                [spark_class, "org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1", "--cores",
                 str(self.cores), "--memory", self.memory, "--webui-port", str(free_port())], **common))
        return self

    def _listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.procs[1:]]

    def __exit__(self, *exc) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        self.log.close()


def write_config(path: Path, *, out: Path, corpus: Path, spec: CorpusSpec, master: str, args, event_dir: Path,
                 distributed_min_docs: int) -> Path:
    ext = "parquet" if spec.format == "parquet" else "jsonl.zst"
    conf = {
        "spark.eventLog.enabled": "true", "spark.eventLog.dir": event_dir.resolve().as_uri(),
        "spark.eventLog.compress": "false", "spark.executor.memory": args.executor_memory,
        "spark.sql.shuffle.partitions": str(args.shuffle_partitions),
        "spark.driver.extraJavaOptions": JVM_FLAGS, "spark.executor.extraJavaOptions": JVM_FLAGS,
    }
    data = {
        "out": str(out), "seed": 0,
        "spark": {"master": master, "driver_memory": args.driver_memory, "conf": conf},
        "tokenizer": {"path": "default"},
        "sources": {name: {"paths": [str(corpus / name / f"*.{ext}")]} for name in source_names(spec)},
        "ingest": {"target_file_mb": args.target_file_mb},
        "order": {"encoder_backend": args.encoder_backend, "max_tokens": args.max_tokens, "k": args.k,
                  "dedup_cosine": 0.95, "seq_len": args.seq_len, "shard_rows": args.shard_rows,
                  "distributed_min_docs": distributed_min_docs},
    }
    path.write_text(json.dumps(data, indent=1))
    return path


STARTED = re.compile(r"stage (\w+): (running|up to date)")
REPORTED = re.compile(r"^\s+(\w+)\s+(ran|skipped|disabled|failed)\s")


def run_pipeline(config: Path, *, until: str, workers: list[int], interval: float, log_path: Path) -> dict:
    """``mixweave run CONFIG --stage UNTIL`` with the sampler on its tree and the workers' trees;
    returns the exit code, stage windows (epoch seconds) and the sampler."""
    cmd = [sys.executable, "-m", "mixweave.cli", "run", str(config), "--stage", until]
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    sampler = Sampler(driver=proc.pid, workers=workers, interval=interval).start()
    starts, ends, status = {}, {}, {}
    lines: list[str] = []

    def pump(stream, sink: list[str]) -> None:
        for line in stream:
            now = time.time()
            sink.append(line)
            if m := STARTED.search(line):
                starts.setdefault(m.group(1), now)
            if m := REPORTED.match(line):
                ends[m.group(1)] = now
                status[m.group(1)] = m.group(2)

    threads = [threading.Thread(target=pump, args=(proc.stderr, lines), daemon=True),
               threading.Thread(target=pump, args=(proc.stdout, lines), daemon=True)]
    for t in threads:
        t.start()
    rc = proc.wait()
    for t in threads:
        t.join()
    sampler.sample()
    sampler.stop()
    log_path.write_text("".join(lines))
    windows = {name: (starts.get(name, ends[name]), ends[name]) for name in ends if status.get(name) == "ran"}
    return {"rc": rc, "wall_s": round(time.time() - t0, 2), "windows": windows, "status": status,
            "sampler": sampler, "tail": "".join(lines[-40:])}


def read_manifest(folder: Path) -> dict:
    path = folder / "_manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def summarize_run(out: Path, run: dict, event_dir: Path | None) -> dict:
    sampler: Sampler = run["sampler"]
    peaks = sampler.peak_by_role()
    tasks = []
    if event_dir is not None:
        # one application per run; Spark 4 writes a folder eventlog_v2_<app>/events_N_<app> (rolling)
        for log in sorted(event_dir.rglob("*")):
            if log.is_file() and (log.name.startswith(("events_", "app-", "local-")) or log.suffix == ".inprogress"):
                tasks.extend(parse_event_log(log))
    shuffles = shuffle_by_window(tasks, run["windows"])
    stages = {}
    for name in PIPELINE:
        manifest = read_manifest(out / name)
        row = {"status": run["status"].get(name, "missing")}
        if manifest:
            row["wall_s"] = manifest.get("timings", {}).get("total_s")
            row["counts"] = manifest.get("counts")
        if name in run["windows"]:
            t0, t1 = run["windows"][name]
            row.update(sampler.window(t0, t1))
            row["shuffle"] = shuffles.get(name)
        stages[name] = row
    quality = {}
    for source, entry in (read_manifest(out / "knn").get("knn") or {}).items():
        quality.setdefault(source, {}).update(knn_path=entry.get("path"), knn_method=entry.get("method"),
                                              recall_at_k=entry.get("recall_at_k"))
    for source, entry in (read_manifest(out / "dedup").get("dedup") or {}).items():
        quality.setdefault(source, {}).update(dedup_path=entry.get("path"),
                                              **{k: entry.get(k) for k in ("n_docs", "kept", "removed") if k in entry})
    for source, entry in (read_manifest(out / "order").get("order") or {}).items():
        quality.setdefault(source, {}).update(
            order_path=entry.get("path"), mean_adjacent_cosine=entry.get("mean_adjacent_cosine"),
            random_order_mean_adjacent_cosine=entry.get("random_order_mean_adjacent_cosine"),
            metrics_sampled=entry.get("metrics_sampled"), n_clusters=entry.get("n_clusters"))
    for source, entry in ((read_manifest(out / "pack").get("windows") or {}).get("sources") or {}).items():
        quality.setdefault(source, {}).update(pack_path=entry.get("path"), n_windows=entry.get("n_windows"),
                                              window_pairwise_cosine_mean=entry.get("window_pairwise_cosine_mean"))
    return {"rc": run["rc"], "wall_s": run["wall_s"], "peak_rss_by_role": peaks,
            "driver_python_peak_rss": peaks.get("driver_python", 0), "driver_jvm_peak_rss": peaks.get("driver_jvm", 0),
            "max_python_task_peak_rss": peaks.get("python_worker", 0),
            "max_executor_jvm_peak_rss": peaks.get("executor_jvm", 0),
            "cpu_s_total": round(sampler.samples[-1]["cpu_s"], 2) if sampler.samples else None,
            "stages": stages, "quality": quality, "spark_tasks": len(tasks), "tail": run["tail"] if run["rc"] else ""}


def hardlink_stages(src: Path, dst: Path, stages: tuple[str, ...]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in stages:
        if (src / name / "_manifest.json").is_file() and not (dst / name).exists():
            shutil.copytree(src / name, dst / name, copy_function=os.link)


def measure_size(n_docs: int, args) -> dict:
    work = Path(args.workdir)
    spec = CorpusSpec(n_docs=n_docs, n_sources=args.sources, median_words=args.median_words, seed=args.seed)
    t0 = time.perf_counter()
    corpus, summary = ensure_corpus(spec, work / "corpus")
    gen_s = time.perf_counter() - t0
    tag = f"{spec.key()}-s{args.shard_rows}-{args.encoder_backend}-t{args.max_tokens}"
    result = {"n_docs": n_docs, "corpus": str(corpus), "corpus_seconds_this_run": round(gen_s, 2),
              "corpus_summary": {k: summary[k] for k in ("n_topics", "sources", "seconds")},
              "loadavg_before": os.getloadavg()}
    with Cluster(work / "cluster" / tag, args.workers, args.worker_cores, args.worker_memory) as cluster:
        runs = {}
        plans = [("distributed", 0, "pack")]
        if n_docs <= args.single_max_docs:
            plans.append(("single", n_docs + 1, "order"))
        for label, min_docs, until in plans:
            out = work / "runs" / f"{tag}-{label}"
            if out.exists():  # a finished run folder would make every stage "skipped": measure afresh
                shutil.rmtree(out)
            if label == "single":
                hardlink_stages(work / "runs" / f"{tag}-distributed", out, ("ingest", "count", "embed"))
            event_dir = work / "events" / f"{tag}-{label}-{int(time.time())}"
            (work / "runs").mkdir(parents=True, exist_ok=True)
            event_dir.mkdir(parents=True, exist_ok=True)
            config = write_config(work / "runs" / f"{tag}-{label}.yaml", out=out, corpus=corpus, spec=spec,
                                  master=cluster.url, args=args, event_dir=event_dir, distributed_min_docs=min_docs)
            print(f"[{n_docs:,} docs] {label}: mixweave run {config} --stage {until}", flush=True)
            run = run_pipeline(config, until=until, workers=cluster.worker_pids, interval=args.sample_s,
                               log_path=out.with_suffix(".log"))
            runs[label] = summarize_run(out, run, event_dir)
            print(f"[{n_docs:,} docs] {label}: rc {run['rc']}, {run['wall_s']:.0f} s, driver peak "
                  f"{runs[label]['driver_python_peak_rss'] / 2**20:,.0f} MB", flush=True)
            if run["rc"] != 0:
                print(run["tail"], flush=True)
    result["runs"] = runs
    result["loadavg_after"] = os.getloadavg()
    return result


# ------------------------------------------------------------------------------ report


def _mb(value) -> str:
    return f"{value / 2**20:,.0f} MB" if value else "-"


def _first_source(run: dict) -> dict:
    quality = run.get("quality") or {}
    return quality[sorted(quality)[0]] if quality else {}


def derived(result: dict) -> dict:
    """Per-size figures used by the table and the ratios."""
    run = result["runs"].get("distributed", {})
    n = result["n_docs"]
    stages = run.get("stages", {})
    out = {
        "driver_python_peak_rss": run.get("driver_python_peak_rss"),
        "driver_jvm_peak_rss": run.get("driver_jvm_peak_rss"),
        "max_python_task_peak_rss": run.get("max_python_task_peak_rss"),
        "max_executor_jvm_peak_rss": run.get("max_executor_jvm_peak_rss"),
        "wall_s": run.get("wall_s"),
        "cpu_s_per_doc": {s: stages[s]["cpu_s"] / n for s in PIPELINE if stages.get(s, {}).get("cpu_s") is not None},
        "wall_s_per_doc": {s: stages[s]["wall_s"] / n for s in PIPELINE if stages.get(s, {}).get("wall_s")},
        "stage_max_rss": {s: stages[s].get("max_rss") or {} for s in PIPELINE if s in stages},
        "shuffle_bytes": {s: (stages[s].get("shuffle") or {}).get("shuffle_write_bytes", 0) for s in PIPELINE
                          if stages.get(s, {}).get("shuffle")},
    }
    out["cpu_s_per_doc_total"] = sum(out["cpu_s_per_doc"].values()) or None
    out["wall_s_per_doc_total"] = sum(out["wall_s_per_doc"].values()) or None
    dq, sq = _first_source(run), _first_source(result["runs"].get("single", {}))
    out["recall_at_k"] = dq.get("recall_at_k")
    out["adjacent_cosine"] = dq.get("mean_adjacent_cosine")
    out["adjacent_cosine_single"] = sq.get("mean_adjacent_cosine")
    if out["adjacent_cosine"] is not None and sq.get("mean_adjacent_cosine"):
        out["adjacent_cosine_ratio"] = out["adjacent_cosine"] / sq["mean_adjacent_cosine"]
    single = result["runs"].get("single")
    if single:
        out["single_driver_python_peak_rss"] = single.get("driver_python_peak_rss")
    out["paths"] = {k: dq.get(k) for k in ("knn_path", "dedup_path", "order_path", "pack_path")}
    return out


def print_table(results: list[dict]) -> dict:
    rows = [(r["n_docs"], derived(r)) for r in results]
    sizes = [f"{n:,}" for n, _ in rows]
    width = 14
    print("\n" + f"{'':<44}" + "".join(f"{s:>{width}}" for s in sizes) + (f"{'last/first':>{width}}" if len(rows) > 1 else ""))

    def line(label: str, values: list, fmt, ratio: bool = True) -> None:
        cells = "".join(f"{(fmt(v) if v is not None else '-'):>{width}}" for v in values)
        tail = ""
        if ratio and len(values) > 1 and values[0] and values[-1] is not None:
            tail = f"{values[-1] / values[0]:>{width - 1}.2f}x"
        print(f"{label:<44}{cells}{tail}")

    ratios = {}
    line("driver peak RSS, Python (VmHWM)", [d["driver_python_peak_rss"] for _, d in rows], _mb)
    line("driver peak RSS, JVM (VmHWM)", [d["driver_jvm_peak_rss"] for _, d in rows], _mb)
    line("largest Python task peak RSS", [d["max_python_task_peak_rss"] for _, d in rows], _mb)
    line("largest executor JVM peak RSS", [d["max_executor_jvm_peak_rss"] for _, d in rows], _mb)
    line("single-process driver peak RSS (baseline)", [d.get("single_driver_python_peak_rss") for _, d in rows], _mb,
         ratio=False)
    line("wall, ingest -> pack (s)", [d["wall_s"] for _, d in rows], lambda v: f"{v:,.0f}")
    stage_rss = [(stage, role) for stage in PIPELINE for role in ("driver_python", "python_worker", "executor_jvm")
                 if any(d["stage_max_rss"].get(stage, {}).get(role) for _, d in rows)]
    for stage, role in stage_rss:
        line(f"  {stage}: max sampled RSS, {role}", [d["stage_max_rss"].get(stage, {}).get(role) for _, d in rows], _mb)
    for stage in [s for s in PIPELINE if any(s in d["wall_s_per_doc"] for _, d in rows)]:
        line(f"  {stage}: wall ms/doc", [d["wall_s_per_doc"].get(stage) for _, d in rows],
             lambda v: f"{v * 1e3:.3f}")
        line(f"  {stage}: CPU ms/doc (all processes)", [d["cpu_s_per_doc"].get(stage) for _, d in rows],
             lambda v: f"{v * 1e3:.3f}")
        line(f"  {stage}: shuffle write", [d["shuffle_bytes"].get(stage) for _, d in rows],
             lambda v: _mb(v) if v else "0", ratio=False)
    line("cost per doc: CPU ms/doc, all stages", [d["cpu_s_per_doc_total"] for _, d in rows], lambda v: f"{v * 1e3:.3f}")
    line("cost per doc: wall ms/doc, all stages", [d["wall_s_per_doc_total"] for _, d in rows], lambda v: f"{v * 1e3:.3f}")
    line("kNN recall@k (sample, knn manifest)", [d["recall_at_k"] for _, d in rows], lambda v: f"{v:.4f}", ratio=False)
    line("adjacent cosine, distributed", [d["adjacent_cosine"] for _, d in rows], lambda v: f"{v:.4f}", ratio=False)
    line("adjacent cosine, single process", [d["adjacent_cosine_single"] for _, d in rows], lambda v: f"{v:.4f}",
         ratio=False)
    line("  distributed / single (target >= 0.95)", [d.get("adjacent_cosine_ratio") for _, d in rows],
         lambda v: f"{v:.4f}", ratio=False)
    print("paths (knn/dedup/order/pack): " + "; ".join(
        f"{n:,}: " + "/".join(str(v) for v in d["paths"].values()) for n, d in rows))
    if len(rows) > 1:
        first, last = rows[0][1], rows[-1][1]
        for key in ("driver_python_peak_rss", "driver_jvm_peak_rss", "cpu_s_per_doc_total", "wall_s_per_doc_total",
                    "max_python_task_peak_rss"):
            if first.get(key) and last.get(key):
                ratios[key] = round(last[key] / first[key], 3)
        print(f"ratios {rows[-1][0]:,} / {rows[0][0]:,} docs (targets <= 1.3x for driver RSS and cost per doc): "
              + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    return {"derived": {n: d for n, d in rows}, "ratios": ratios}


def marginal_cost(n1: int, cost1: dict[str, float], n2: int, cost2: dict[str, float]) -> dict[str, float]:
    """CPU seconds per extra document between two sizes, per stage (costs given per document):
    (n2 c2 - n1 c1) / (n2 - n1), floored at 0. It removes the fixed costs (Spark session, executors,
    Python workers, model loading) that dominate small runs; noisy when the sizes are close."""
    return {stage: max(0.0, (n2 * cost2[stage] - n1 * cost1[stage]) / (n2 - n1)) for stage in cost2 if stage in cost1}


def print_projection(cpu_s_per_doc: dict, args, measured_at: str) -> dict:
    proj = projection(cpu_s_per_doc, nodes=args.nodes, cores_per_node=args.cores_per_node,
                      gpus_per_node=args.gpus_per_node, gpu_embed_docs_per_s=args.gpu_embed_docs_per_s)
    print(f"\nprojection to {PAPER_DOCS:,} documents from the CPU seconds per document {measured_at} "
          f"(perfect spreading over {args.cores_per_node} cores per node; a lower bound):")
    print(f"{'nodes':>6}" + "".join(f"{s:>10}" for s in cpu_s_per_doc) + f"{'total':>10}{'GPU emb.':>10}{'total':>10}")
    for n, row in proj["nodes"].items():
        print(f"{n:>6}" + "".join(f"{row['cpu_embedding_h'][s]:>9.2f}h" for s in cpu_s_per_doc)
              + f"{row['total_cpu_embedding_h']:>9.2f}h{row['gpu_embedding_h'].get('embed', 0):>9.2f}h"
              + f"{row['total_gpu_embedding_h']:>9.2f}h")
    print(f"GPU embedding at {args.gpu_embed_docs_per_s:,.0f} docs/s per GPU x {args.gpus_per_node} GPUs per node "
          "(default: measured on one H200 at 128 tokens by bench/gpu.py, 2026-12-04; host-bound by tokenizing)")
    if "order_cpu_h" in proj:
        print(f"order (traversal incl. its Spark plumbing): {proj['order_cpu_h']:,.1f} CPU-hours projected vs the ICP "
              f"paper's 12 h on 20 CPUs = {PAPER_TRAVERSAL_CPU_H} CPU-hours for the traversal alone "
              f"(ratio {proj['order_cpu_h'] / PAPER_TRAVERSAL_CPU_H:.3f}); the paper's kNN search: 6 h on 32 GPUs")
    return proj


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", default="100000,300000,1000000", help="comma-separated corpus sizes")
    p.add_argument("--workdir", help="corpus cache, cluster logs, run folders, event logs (required unless --report)")
    p.add_argument("--report", metavar="JSON", help="only re-print the table and projections of an earlier results file")
    p.add_argument("--json", default=str(ROOT / "bench" / "results-scale.json"))
    p.add_argument("--sources", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--median-words", type=int, default=128)
    p.add_argument("--encoder-backend", default="static")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--shard-rows", type=int, default=50_000, help="order.shard_rows (keep it fixed across sizes)")
    p.add_argument("--target-file-mb", type=float, default=64.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--worker-cores", type=int, default=1)
    p.add_argument("--worker-memory", default="3g")
    p.add_argument("--executor-memory", default="2g")
    p.add_argument("--driver-memory", default="1g")
    p.add_argument("--shuffle-partitions", type=int, default=8)
    p.add_argument("--single-max-docs", type=int, default=100_000,
                   help="run the single-process chain too at sizes up to this (it holds the source on the driver)")
    p.add_argument("--sample-s", type=float, default=0.5)
    p.add_argument("--nodes", type=lambda s: [int(x) for x in s.split(",")], default=[8, 32, 128])
    p.add_argument("--cores-per-node", type=int, default=32)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--gpu-embed-docs-per-s", type=float, default=GPU_EMBED_DOCS_PER_S)
    args = p.parse_args(argv)
    if not args.workdir and not args.report:
        p.error("--workdir is required (or --report JSON)")
    started = time.time()
    if args.report:  # re-print the table and projections of an earlier run's JSON (nothing is run)
        earlier = json.loads(Path(args.report).read_text())
        results, sizes = earlier["results"], [r["n_docs"] for r in earlier["results"]]
    else:
        sizes = [int(float(x)) for x in args.docs.split(",") if x.strip()]
        results = [measure_size(n, args) for n in sizes]
    summary = print_table(results)
    biggest = summary["derived"][sizes[-1]]
    proj = marginal = None
    if biggest["cpu_s_per_doc"]:
        proj = print_projection(biggest["cpu_s_per_doc"], args, f"measured at {sizes[-1]:,} docs (fixed costs included)")
    if len(sizes) > 1 and biggest["cpu_s_per_doc"]:
        before = summary["derived"][sizes[-2]]
        cost = marginal_cost(sizes[-2], before["cpu_s_per_doc"], sizes[-1], biggest["cpu_s_per_doc"])
        marginal = print_projection(cost, args, f"between {sizes[-2]:,} and {sizes[-1]:,} docs (marginal: fixed "
                                                f"costs removed)")
        marginal["cpu_s_per_doc"] = cost
    if args.report:
        return
    payload = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), "seconds": round(time.time() - started),
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
               "args": vars(args), "results": results, "ratios": summary["ratios"],
               "derived": {str(k): v for k, v in summary["derived"].items()}, "projection": proj,
               "projection_marginal": marginal}
    Path(args.json).write_text(json.dumps(payload, indent=1, default=str))
    print(f"\nresults: {args.json}")


if __name__ == "__main__":
    main()
