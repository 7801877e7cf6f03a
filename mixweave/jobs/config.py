"""Settings of the Spark jobs: the session, the sources to ingest and how ingest writes them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import ConfigError

SPARK_MASTER = re.compile(r"^(local(\[(\*|[1-9][0-9]*)(,[0-9]+)?\])?|local-cluster\[[0-9]+,[0-9]+,[0-9]+\]"
                          r"|yarn|(spark|mesos|k8s)://\S+)$")
MEMORY_SIZE = re.compile(r"^[1-9][0-9]*[kmgtKMGT]?[bB]?$")


@dataclass(frozen=True, kw_only=True)
class SparkConfig:
    master: str = "local[*]"
    """Spark master URL: local[*], local[2], spark://host:7077, yarn, k8s://..."""
    driver_memory: str | None = None
    """The driver JVM's heap (e.g. 4g). Unset: spark-defaults.conf's spark.driver.memory, else 2g."""
    partitions: int = 0
    """Tasks for file-parallel stages; 0 = 2 x the default parallelism."""
    conf: dict[str, str] = field(default_factory=dict)
    """Extra spark.* settings passed to the session builder."""
    concurrent_sources: int = 4
    """Sources whose knn, dedup, order or pack run on Spark at once (their jobs share the task slots);
    1 = one after another. Changes no byte."""

    def __post_init__(self) -> None:
        if not SPARK_MASTER.match(self.master):
            raise ConfigError(f"spark.master {self.master!r} is not a Spark master URL; use local[*], local[2], "
                              "spark://host:7077, yarn or k8s://https://host:port")
        if self.driver_memory is not None and not MEMORY_SIZE.match(str(self.driver_memory)):
            raise ConfigError(f"spark.driver_memory {self.driver_memory!r}: write a size such as 2g or 512m")
        if not isinstance(self.concurrent_sources, int) or self.concurrent_sources < 1:
            raise ConfigError(f"spark.concurrent_sources must be an integer >= 1 (1 = one source at a time), "
                              f"got {self.concurrent_sources!r}")
        if self.partitions < 0:
            raise ConfigError(f"spark.partitions must be >= 0 (0 = automatic), got {self.partitions}")
        bad = [key for key in self.conf if not key.startswith("spark.")]
        if bad:
            raise ConfigError(f"spark.conf.{bad[0]}: only spark.* settings go here")


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    paths: tuple[str, ...]
    """Globs of .jsonl (plain, .gz, .zst, .bz2, .xz) or .parquet files."""
    text_field: str = "text"
    id_field: str = "id"


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    max_doc_bytes: int = 10_000_000
    """Documents longer than this (UTF-8 bytes after normalisation) are quarantined as too_long."""
    target_file_mb: float = 256.0
    """Each source's docs are split into ceil(bytes / target) parquet files, by a hash of doc_id."""
    distributed_min_mb: float = 16.0
    """Inputs of at least this many MiB (the input files' sizes, all sources together) are ingested by
    a Spark job; smaller ones in one process, without starting a JVM, unless their records decode to
    more than 16 times this (compressed files that expand a lot: then the Spark job starts over).
    Both paths write the same bytes. 0 = always Spark."""

    def __post_init__(self) -> None:
        if self.max_doc_bytes <= 0:
            raise ConfigError(f"ingest.max_doc_bytes must be > 0, got {self.max_doc_bytes}")
        if not self.target_file_mb > 0:
            raise ConfigError(f"ingest.target_file_mb must be > 0 (size of each output parquet file), got "
                              f"{self.target_file_mb}")
        if not self.distributed_min_mb >= 0:
            raise ConfigError(f"ingest.distributed_min_mb must be >= 0 (0 = always a Spark job), got {self.distributed_min_mb}")
