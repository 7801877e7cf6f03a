"""Utility estimation: how useful each source is for each benchmark.

- ``embedding``: mean top-k cosine similarity of sampled documents to benchmark examples (CPU, no
  LLM; the default) -- :mod:`.embedding`;
- ``medu``: an LLM describes each benchmark from its dev examples, merges the descriptions, and
  rates sampled documents Great..Useless (5..1), by generated answer or label probabilities --
  :mod:`.medu`, with backends ``transformers`` / ``vllm`` / ``openai`` (:mod:`.backend`).

- ``ablation``: one small model trained per source under a FLOPs budget, scored on the benchmark
  dev text through the trainer -- :mod:`.ablation`.

All produce a table that :func:`mixweave.data.utility_table.read_utility_table` reads (embedding
and medu: ``source, benchmark, mean, std, se, ci_low, ci_high, n, n_unparseable``; ablation: ``source,
benchmark, score, std, se, loss, n``), and embedding and
medu a cost report (tokens, FLOPs, wall time, and the FLOPs of training ablations over the same
sources). Light at import time: heavy libraries (torch, transformers, vllm, sentence-transformers)
load on first use.
"""

from mixweave.utility.aggregate import TABLE_COLUMNS, aggregate_scores, bootstrap_ci, normalize_table
from mixweave.utility.api import (
    METHODS,
    UtilityResult,
    estimate_utility,
    read_benchmarks,
    run_estimate,
    write_utility_outputs,
)
from mixweave.utility.backend import BACKENDS, Backend, Generation, LabelProbs, make_backend
from mixweave.utility.cache import ResultCache
from mixweave.utility.config import UtilityConfig
from mixweave.utility.cost import ablation_comparison, inference_flops, training_flops
from mixweave.utility.medu import (
    MODES,
    BackendError,
    MeduOptions,
    chunk_examples,
    describe_benchmarks,
    merge_plan,
    rate_documents,
)
from mixweave.utility.prompts import load_prompts
from mixweave.utility.sampling import load_sampled_docs, sample_docs, sample_docs_spark
from mixweave.utility.scoring import LABELS, SCORES, expected_score, parse_final_score

__all__ = [
    "BACKENDS", "LABELS", "METHODS", "MODES", "SCORES", "TABLE_COLUMNS", "Backend", "BackendError",
    "Generation", "LabelProbs", "MeduOptions", "ResultCache",
    "UtilityConfig", "UtilityResult", "ablation_comparison", "aggregate_scores", "bootstrap_ci", "chunk_examples",
    "describe_benchmarks", "estimate_utility", "expected_score", "inference_flops", "load_prompts",
    "load_sampled_docs", "make_backend", "merge_plan", "normalize_table", "parse_final_score",
    "rate_documents", "read_benchmarks", "run_estimate", "sample_docs", "sample_docs_spark",
    "training_flops", "write_utility_outputs",
]
