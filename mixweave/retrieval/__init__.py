"""In-Context Pretraining core: embeddings, kNN, semantic dedup, Algorithm 1 ordering, packing.

Pure functions over numpy arrays / Arrow tables; the Spark jobs in ``mixweave.jobs`` map them over
partitions. The interchange format between stages is ``(I, D)``: int64 / float32 ``[N, k]``
neighbour ids (``-1`` padding, no self matches) and cosines.

Importing this package is cheap (numpy only): faiss, numba, torch, pyarrow and
sentence-transformers are imported inside the functions that need them.

Naming: ``mixweave.retrieval.traverse`` and ``mixweave.retrieval.knn`` are the *functions*; import
other names from the modules with ``from mixweave.retrieval.knn import recall_at_k`` (not
``import mixweave.retrieval.knn as m``, which yields the function).
"""

from __future__ import annotations

from mixweave.retrieval.dedup import DedupResult, restrict_knn, semantic_dedup
from mixweave.retrieval.encoders import embed_texts, load_encoder
from mixweave.retrieval.knn import knn, knn_torch, l2_normalize, recall_at_k
from mixweave.retrieval.metrics import order_metrics
from mixweave.retrieval.pack import PackedWindows, pack_windows, spans_table
from mixweave.retrieval.partition import partitioned_order, plan_partitions
from mixweave.retrieval.traverse import build_graph, order_clusters, traverse, traverse_clustered

__all__ = [
    "DedupResult", "PackedWindows", "build_graph", "embed_texts", "knn",
    "knn_torch", "l2_normalize", "load_encoder", "order_clusters", "order_metrics", "pack_windows",
    "partitioned_order", "plan_partitions",
    "recall_at_k", "restrict_knn", "semantic_dedup", "spans_table", "traverse", "traverse_clustered",
]
