"""Embedding backends side by side in one run: speed and neighbour quality against the torch reference.

    .venv/bin/python bench/embed.py                          # data/tiny (mixweave corpus build --tier tiny)
    .venv/bin/python bench/embed.py --per-source 40 --rounds 3 --json bench/embed.json
    .venv/bin/python bench/embed.py --corpus tests/data/corpus --per-source 20   # a quick smoke run

For each backend of ``mixweave.retrieval.encoder_backends`` (torch = the model in PyTorch, ``TorchEncoder``, the
reference; onnx; openvino; onnx-int8; static) on the same real documents (the first --per-source
non-empty documents of every source of the corpus, --max-tokens 128 tokens each):

* **docs/s**: ``embed_texts`` over all documents, batch 32, --threads CPU threads for every backend
  (torch.set_num_threads / the runtime's thread setting), warm (model loaded and run once first),
  backends interleaved round by round (torch, onnx, ..., torch, onnx, ...) and the best round kept,
  so load from other processes hits all of them alike. ``speedup`` = docs/s / torch's docs/s of the
  same run; ``CPU speedup`` = torch's process CPU seconds / the backend's for the same documents
  (the steadier figure on a shared machine; runtimes that spin-wait only look worse by it).
* **recall@20** per source: share of each document's 20 exact (brute-force) torch neighbours within
  its source that the backend's exact 20 neighbours also hold; the table shows the mean over
  sources and the worst source.
* **1st-nb cos ratio**: per document, the torch-space cosine to the backend's first neighbour over
  the cosine to torch's own first neighbour, averaged (1.0 = the neighbour is as close).
* **ICP adj cos**: the backend's own kNN (k=20, exact) and Algorithm 1 order per source
  (``mixweave.retrieval.knn`` + ``traverse``), scored in the torch space by ``order_metrics``'s
  mean adjacent cosine (torch's kNN for edge lookups), averaged over sources weighted by documents;
  ``ratio`` is relative to torch's own order.

Exports are built (and cached) before timing; build seconds are printed when a build happened.

``--roofline`` adds, in the same rounds, a torch fp32 matrix product (2048^3, the same threads) as
the machine's reachable fp32 peak, and converts each backend's docs/s to GFLOP/s from the documents'
real (unpadded) token counts: ``24 d^2 + 4 L d`` FLOPs per token per layer (Q, K, V, O and the 4d
feed-forward; scores and the weighted sum), a lower bound on the work done. It prints what share of
the peak torch reaches and what a lossless 2x would need: above 100 % it cannot be had in fp32 on
this CPU (the CPU's bf16/AMX flags are printed: without them there is no faster lossless path).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mixweave.retrieval import encoder_backends as eb  # noqa: E402
from mixweave.retrieval.encoders import embed_texts, load_encoder, resolve_encoder_path  # noqa: E402


def read_corpus(folder: Path, per_source: int) -> dict[str, list[str]]:
    out = {}
    for source in sorted(p for p in folder.iterdir() if p.is_dir()):
        texts = []
        for path in sorted(source.glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                text = json.loads(line).get("text", "")
                if isinstance(text, str) and text.strip():
                    texts.append(text)
                if len(texts) >= per_source:
                    break
            if len(texts) >= per_source:
                break
        if len(texts) > 21:
            out[source.name] = texts
    return out


def exact_knn(E: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    S = E @ E.T
    np.fill_diagonal(S, -np.inf)
    I = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return I.astype(np.int64), np.take_along_axis(S, I, 1).astype(np.float32)


def quality(E: np.ndarray, R: np.ndarray, k: int) -> dict:
    """recall@k, first-neighbour cosine ratio, ICP adjacent cosine in the reference space."""
    from mixweave.retrieval import order_metrics, traverse

    Ir, Dr = exact_knn(R, k)
    Ie, De = exact_knn(E, k)
    recall = float(np.mean([len(set(Ir[i]) & set(Ie[i])) / k for i in range(len(E))]))
    first = np.einsum("ij,ij->i", R, R[Ie[:, 0]]) / Dr[:, 0]
    order = traverse(Ie, De)
    adj = order_metrics(R, order, Ir, Dr)["mean_adjacent_cosine"]
    return {"recall": recall, "first_ratio": float(first.mean()), "icp_adj": float(adj), "n": len(E)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=str(ROOT / "data" / "tiny"))
    ap.add_argument("--per-source", type=int, default=60)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--backends", default=",".join(eb.BACKENDS))
    ap.add_argument("--json", default=None)
    ap.add_argument("--roofline", action="store_true", help="also measure the fp32 matmul peak (module docstring)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    corpus = Path(args.corpus)
    if not corpus.is_dir():
        sys.exit(f"{corpus} is missing: build it with `.venv/bin/mixweave corpus build --tier tiny --out data/tiny` "
                 "or pass --corpus tests/data/corpus")
    sources = read_corpus(corpus, args.per_source)
    texts = [t for s in sorted(sources) for t in sources[s]]
    bounds, lo = {}, 0
    for s in sorted(sources):
        bounds[s] = (lo, lo + len(sources[s]))
        lo += len(sources[s])
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if backends[0] != "torch":
        backends = ["torch"] + [b for b in backends if b != "torch"]
    model_dir = resolve_encoder_path("default").resolve()
    print(f"{len(texts)} documents from {len(sources)} sources of {corpus} ({args.per_source} per source), "
          f"{args.max_tokens} tokens, batch {args.batch_size}, {args.threads} threads; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")

    encoders, info = {}, {}
    for b in backends:
        t0 = time.perf_counter()
        if b != "torch":
            key = eb.export_key(model_dir, b)
            built = not (eb.cache_root() / key / "_done.json").is_file()
            eb.ensure_export(model_dir, b)
            if built:
                print(f"  built {b} export {key} in {time.perf_counter() - t0:.1f}s")
        t0 = time.perf_counter()
        encoders[b] = load_encoder("default", "cpu", backend=b, threads=args.threads)
        embed_texts(encoders[b], texts[:8], max_tokens=args.max_tokens, batch_size=args.batch_size)
        info[b] = {"load_s": round(time.perf_counter() - t0, 2), "wall": [], "cpu": []}

    vectors, peaks = {}, []
    for r in range(args.rounds):
        if args.roofline:
            peaks.append(sgemm_gflops())
        for b in backends:
            w0, c0 = time.perf_counter(), time.process_time()
            vectors[b] = embed_texts(encoders[b], texts, max_tokens=args.max_tokens, batch_size=args.batch_size)
            info[b]["wall"].append(time.perf_counter() - w0)
            info[b]["cpu"].append(time.process_time() - c0)
        print(f"  round {r + 1}: " + ", ".join(f"{b} {info[b]['wall'][-1]:.1f}s" for b in backends)
              + f" (load {os.getloadavg()[0]:.1f})")

    R = vectors["torch"]
    rows = []
    for b in backends:
        per = {s: quality(vectors[b][lo:hi], R[lo:hi], args.k) for s, (lo, hi) in bounds.items()}
        n = sum(q["n"] for q in per.values())
        wall = min(info[b]["wall"])
        rows.append({
            "backend": b, "docs_per_s": len(texts) / wall, "cpu_s": info[b]["cpu"][int(np.argmin(info[b]["wall"]))],
            "wall_s": wall, "load_s": info[b]["load_s"], "dim": int(vectors[b].shape[1]),
            "recall_mean": float(np.mean([q["recall"] for q in per.values()])),
            "recall_worst": min((q["recall"], s) for s, q in per.items()),
            "first_ratio": float(np.mean([q["first_ratio"] for q in per.values()])),
            "icp_adj": sum(q["icp_adj"] * q["n"] for q in per.values()) / n,
            "per_source": per,
        })
    ref = rows[0]
    print()
    print(f"| backend | docs/s at {args.max_tokens} tokens | speedup | CPU s | CPU speedup | recall@{args.k} vs torch: "
          "mean (worst source) | 1st-neighbour cosine ratio | ICP adjacent cosine (torch space) | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        row["speedup"] = row["docs_per_s"] / ref["docs_per_s"]
        row["cpu_speedup"] = ref["cpu_s"] / max(row["cpu_s"], 1e-9)
        row["icp_ratio"] = row["icp_adj"] / ref["icp_adj"]
        worst, where = row["recall_worst"]
        print(f"| {row['backend']} | {row['docs_per_s']:.1f} | {row['speedup']:.2f} | {row['cpu_s']:.1f} | "
              f"{row['cpu_speedup']:.2f} | "
              f"{row['recall_mean']:.3f} ({worst:.2f} {where}) | {row['first_ratio']:.3f} | {row['icp_adj']:.4f} | "
              f"{row['icp_ratio']:.3f} |")
    roofline = print_roofline(rows, texts, model_dir, args.max_tokens, peaks) if args.roofline else None
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "n_docs": len(texts), "rows": rows,
                                               "roofline": roofline}, indent=1, default=str))


def sgemm_gflops(n: int = 2048, seconds: float = 2.0) -> float:
    """fp32 GFLOP/s of torch's n x n x n matrix product (the threads set by torch.set_num_threads)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0, k = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        a @ b
        k += 1
    return 2 * n**3 * k / (time.perf_counter() - t0) / 1e9


def print_roofline(rows: list[dict], texts: list[str], model_dir: Path, max_tokens: int, peaks: list[float]) -> dict:
    """Each backend's achieved GFLOP/s (unpadded tokens, a lower bound) against the fp32 matmul peak."""
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    lengths = np.array([min(len(ids), max_tokens) for ids in tok(texts, truncation=False)["input_ids"]], dtype=np.float64)
    d, layers = cfg.hidden_size, cfg.num_hidden_layers
    flops = float(np.sum(lengths * layers * (24 * d * d + 4 * lengths * d)))  # every document once
    peak = max(peaks)
    flags = set(open("/proc/cpuinfo").read().split()) if Path("/proc/cpuinfo").is_file() else set()
    wide = sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "avx_vnni", "avx512f"))
    print(f"\nroofline: fp32 matmul peak {peak:.0f} GFLOP/s (best of {len(peaks)} rounds: "
          f"{', '.join(f'{p:.0f}' for p in peaks)}); {flops / len(texts) / 1e9:.2f} GFLOP per document "
          f"(mean {lengths.mean():.0f} tokens); CPU flags: {', '.join(wide) or 'none of avx512f/vnni/bf16/amx'}")
    out = {"peak_gflops": peak, "peaks": peaks, "gflop_per_doc": flops / len(texts) / 1e9, "flags": wide, "backends": {}}
    for row in rows:
        if row["backend"] not in ("torch", "onnx", "openvino"):  # other models or integer kernels: no fp32 count
            continue
        achieved = flops / row["wall_s"] / 1e9
        out["backends"][row["backend"]] = {"gflops": achieved, "share_of_peak": achieved / peak}
        print(f"  {row['backend']}: {achieved:.0f} GFLOP/s = {100 * achieved / peak:.0f} % of the fp32 peak")
    torch_share = out["backends"]["torch"]["share_of_peak"]
    print(f"  a lossless 2x over torch needs {200 * torch_share:.0f} % of the fp32 peak")
    out["lossless_2x_needs_share"] = 2 * torch_share
    return out


if __name__ == "__main__":
    main()
