"""Benchmark: the CUDA paths beside the CPU ones, in one run (needs a CUDA machine).

1. **embed**: the default encoder (all-MiniLM-L6-v2, ``TorchEncoder``) on CUDA vs on every CPU
   thread, over the test corpus's real documents (``tests/data/corpus``, --max-tokens tokens each;
   CUDA also runs the corpus repeated to --gpu-docs documents, since 449 documents are a few
   batches). docs/s each, warm (one pass first), best of --rounds; ``ratio`` = CUDA / CPU docs/s;
   ``max |diff|`` is the largest element difference of the two devices' unit vectors (fp32 both).
   Then CUDA with ``embed_texts(prefetch=False)`` (tokenizing each batch in line) beside the default
   (the next batch tokenized on a thread while the GPU runs this one), alternated.
2. **knn**: ``knn_torch`` (exact blocked matmul + top-k, the kNN backend for CUDA machines without
   faiss-gpu) on --knn-n random unit vectors of dimension 384, k=20, CUDA vs CPU, with the recall
   of CUDA's lists against CPU's; then CUDA alone at --knn-n-gpu (where the CPU would take minutes).
3. **precision**: the CUDA encoder in fp32 (the product's setting), with TF32 matmuls, and under
   ``torch.autocast`` bf16 / fp16: docs/s over the --gpu-docs documents, and against fp32 on the
   corpus's unique documents the worst and mean cosine of each document's two vectors and the
   recall@20 of its exact neighbours (a measurement for a possible half-precision option, not a
   setting the product has).

    python bench/gpu.py [--sections embed,knn,precision] [--max-tokens 128] [--gpu-docs 8192] [--knn-n 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def corpus_texts() -> list[str]:
    """Every document of the test corpus, sources in name order."""
    texts = []
    for path in sorted((ROOT / "tests" / "data" / "corpus").glob("*/*.jsonl")):
        texts.extend(json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip())
    return texts


def docs_per_s(encoder, texts, *, max_tokens: int, batch_size: int, rounds: int, sync,
               prefetch: bool | None = None) -> tuple[float, object]:
    """Best-of-``rounds`` docs/s of ``embed_texts`` after one warm pass; also returns the vectors."""
    from mixweave.retrieval.encoders import embed_texts

    vectors = embed_texts(encoder, texts, max_tokens=max_tokens, batch_size=batch_size, prefetch=prefetch)
    best = 0.0
    for _ in range(rounds):
        sync()
        t0 = time.perf_counter()
        embed_texts(encoder, texts, max_tokens=max_tokens, batch_size=batch_size, prefetch=prefetch)
        sync()
        best = max(best, len(texts) / (time.perf_counter() - t0))
    return best, vectors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--gpu-docs", type=int, default=8192)
    ap.add_argument("--gpu-batch", type=int, default=256)
    ap.add_argument("--cpu-batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--knn-n", type=int, default=50_000)
    ap.add_argument("--knn-n-gpu", type=int, default=500_000)
    ap.add_argument("--sections", default="embed,knn,precision")
    args = ap.parse_args()
    sections = set(args.sections.split(","))

    import torch

    from mixweave.retrieval.encoders import load_encoder

    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs CUDA")
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, CPU threads {torch.get_num_threads()}")
    sync = torch.cuda.synchronize
    texts = corpus_texts()

    gpu_enc = load_encoder("default", device="cuda")
    many = (texts * (args.gpu_docs // len(texts) + 1))[: args.gpu_docs]
    if "precision" in sections:
        precision(gpu_enc, texts, many, args, sync)
    if "embed" in sections:
        embed(gpu_enc, texts, many, args, sync)
    if "knn" in sections:
        knn(args, sync)


def precision(gpu_enc, texts, many, args, sync) -> None:
    """Section 3 of the module docstring."""
    import contextlib

    import numpy as np
    import torch

    from mixweave.retrieval.knn import recall_at_k

    def exact_neighbours(E, k=20):
        S = E @ E.T
        np.fill_diagonal(S, -np.inf)
        return np.argsort(-S, axis=1, kind="stable")[:, :k]

    modes = {"fp32": (False, None), "tf32": (True, None), "bf16": (False, torch.bfloat16),
             "fp16": (False, torch.float16)}
    print(f"\nprecision, CUDA, {len(many)} documents at {args.max_tokens} tokens, batch {args.gpu_batch}")
    reference = None
    for name, (tf32, dtype) in modes.items():
        torch.backends.cuda.matmul.allow_tf32 = tf32
        ctx = (lambda d=dtype: torch.autocast("cuda", dtype=d)) if dtype else contextlib.nullcontext
        with ctx():
            rate, _ = docs_per_s(gpu_enc, many, max_tokens=args.max_tokens, batch_size=args.gpu_batch,
                                 rounds=args.rounds, sync=sync)
            _, vectors = docs_per_s(gpu_enc, texts, max_tokens=args.max_tokens, batch_size=args.gpu_batch,
                                    rounds=0, sync=sync)
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        if reference is None:
            reference, ref_rate, ref_nb = vectors, rate, exact_neighbours(vectors)
        cos = (vectors * reference).sum(1)
        recall = recall_at_k(exact_neighbours(vectors), ref_nb)
        print(f"  {name:>5}: {rate:8.0f} docs/s  {rate / ref_rate:5.2f}x   cos vs fp32 min {cos.min():.5f} "
              f"mean {cos.mean():.6f}   recall@20 {recall:.4f}")
    torch.backends.cuda.matmul.allow_tf32 = False


def embed(gpu_enc, texts, many, args, sync) -> None:
    """Section 1 of the module docstring."""
    import numpy as np
    import torch

    from mixweave.retrieval.encoders import load_encoder

    cpu_enc = load_encoder("default", device="cpu")
    cpu_rate, cpu_vec = docs_per_s(cpu_enc, texts, max_tokens=args.max_tokens, batch_size=args.cpu_batch,
                                   rounds=args.rounds, sync=lambda: None)
    gpu_rate, gpu_vec = docs_per_s(gpu_enc, texts, max_tokens=args.max_tokens, batch_size=args.gpu_batch,
                                   rounds=args.rounds, sync=sync)
    gpu_many, _ = docs_per_s(gpu_enc, many, max_tokens=args.max_tokens, batch_size=args.gpu_batch,
                             rounds=args.rounds, sync=sync)
    diff = float(np.abs(cpu_vec - gpu_vec).max())
    print(f"\nembed, {len(texts)} corpus documents at {args.max_tokens} tokens")
    print(f"  CPU  ({torch.get_num_threads()} threads, batch {args.cpu_batch}): {cpu_rate:10.0f} docs/s")
    print(f"  CUDA (batch {args.gpu_batch}):            {gpu_rate:10.0f} docs/s   ratio {gpu_rate / cpu_rate:.1f}x"
          f"   max |diff| {diff:.2e}")
    print(f"  CUDA, {len(many)} documents:           {gpu_many:10.0f} docs/s   ratio {gpu_many / cpu_rate:.1f}x")
    rates: dict[bool, float] = {False: 0.0, True: 0.0}
    for _ in range(args.rounds):  # alternated, best kept
        for prefetch in (False, True):
            rate, _ = docs_per_s(gpu_enc, many, max_tokens=args.max_tokens, batch_size=args.gpu_batch, rounds=1,
                                 sync=sync, prefetch=prefetch)
            rates[prefetch] = max(rates[prefetch], rate)
    print(f"  CUDA, {len(many)} documents, tokenizing in line: {rates[False]:8.0f} docs/s; the next batch "
          f"prefetched on a thread (the default): {rates[True]:8.0f} docs/s   {rates[True] / rates[False]:.2f}x")


def knn(args, sync) -> None:
    """Section 2 of the module docstring."""
    import numpy as np

    from mixweave.retrieval.knn import knn_torch, l2_normalize, recall_at_k

    rng = np.random.default_rng(0)
    X = l2_normalize(rng.standard_normal((args.knn_n, 384)).astype(np.float32))
    knn_torch(X[:4096], 20, device="cuda")  # CUDA context and kernels warm
    t0 = time.perf_counter()
    I_cpu, _ = knn_torch(X, 20, device="cpu")
    t_cpu = time.perf_counter() - t0
    sync()
    t0 = time.perf_counter()
    I_gpu, _ = knn_torch(X, 20, device="cuda")
    sync()
    t_gpu = time.perf_counter() - t0
    print(f"\nknn_torch exact, n={args.knn_n:,}, d=384, k=20")
    print(f"  CPU {t_cpu:8.2f} s   CUDA {t_gpu:8.2f} s   ratio {t_cpu / t_gpu:.1f}x   recall CUDA vs CPU "
          f"{recall_at_k(I_gpu, I_cpu):.4f}")
    Y = l2_normalize(rng.standard_normal((args.knn_n_gpu, 384)).astype(np.float32))
    sync()
    t0 = time.perf_counter()
    knn_torch(Y, 20, device="cuda")
    sync()
    t_big = time.perf_counter() - t0
    print(f"  CUDA alone, n={args.knn_n_gpu:,}: {t_big:.2f} s "
          f"({2 * args.knn_n_gpu ** 2 * 384 / t_big / 1e12:.1f} TFLOP/s of fp32 matmul)")


if __name__ == "__main__":
    main()
