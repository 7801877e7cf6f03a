"""Benchmark: export throughput per format vs a plain ``numpy.tofile`` of the same windows.

Real GPT-2 tokens (the test corpus, or stdlib sources when it is absent) are packed into windows
of S tokens and tiled to ``--tokens`` tokens per source (the pack stays real token ids). Every
side starts from the same pack artifact: the baseline reads each source's windows
(``read_windows``) and writes them with ``ndarray.tofile``; each exporter reads the same windows
and writes its format (+ config files + manifest with sha256). Printed side by side from one run:
seconds, MB/s of token data written, and the ratio to the baseline (1.0 = as fast as a raw copy).

    python bench/export.py [--tokens 4000000] [--seq-len 2048] [--formats megatron,olmo,mds,hf,datatrove]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_pack(root: Path, seq_len: int, tokens_per_source: int) -> tuple[Path, Path, int]:
    import numpy as np

    from mixweave.data.mixture_manifest import write_mixture_manifest
    from mixweave.data.windows import read_windows, windows_info, write_pack_artifact
    from mixweave.trainer.sample_data import build_sample_inputs, sample_mixture

    corpus = ROOT / "tests" / "data" / "corpus"
    base = build_sample_inputs(root / "base", seq_len=seq_len, corpus_dir=corpus if corpus.is_dir() else None,
                               sources=["books", "code", "web"] if corpus.is_dir() else None)
    info = windows_info(base.pack_dir)
    windows, stats = {}, {}
    for name in info.sources:
        w = read_windows(base.pack_dir, name)
        reps = max(1, -(-tokens_per_source // (w.shape[0] * seq_len)))
        windows[name] = np.tile(w, (reps, 1))[: max(1, tokens_per_source // seq_len)]
        stats[name] = {"n_tokens": windows[name].shape[0] * seq_len, "n_docs": windows[name].shape[0], "paths": [name]}
    pack = write_pack_artifact(root / "pack", windows, seq_len=seq_len, plus_one=False, tokenizer=info.tokenizer)
    total = sum(s["n_tokens"] for s in stats.values())
    manifest = sample_mixture(stats, float(total), weights=None, max_epochs=4.0, seq_len=seq_len,
                              tokenizer=info.tokenizer, seed=0)
    mixture = write_mixture_manifest(root / "mixture.json", manifest)
    return Path(pack), Path(mixture), int(sum(w.nbytes for w in windows.values()))


def baseline(pack: Path, out: Path) -> float:
    from mixweave.data.windows import read_windows, windows_info

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for name in windows_info(pack).sources:
        read_windows(pack, name).tofile(out / f"{name}.bin")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4_000_000, help="tokens per source (3 sources)")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--formats", default="megatron,olmo,mds,hf,datatrove")
    parser.add_argument("--repeat", type=int, default=2, help="best of N runs per side")
    args = parser.parse_args()

    from mixweave.pipeline.export import export

    root = Path(tempfile.mkdtemp(prefix="mixweave-bench-export-"))
    try:
        pack, mixture, nbytes = make_pack(root, args.seq_len, args.tokens)
        mb = nbytes / 1e6
        base = min(baseline(pack, root / f"raw{i}") for i in range(args.repeat))
        print(f"pack: {nbytes // 2:,} tokens in 3 sources, S={args.seq_len}, {mb:.1f} MB of uint16 token data")
        print(f"{'side':<28}{'seconds':>9}{'MB/s':>9}{'x tofile':>10}")
        print(f"{'read_windows + tofile':<28}{base:>9.2f}{mb / base:>9.1f}{1.0:>10.2f}")
        for fmt in args.formats.split(","):
            times = []
            for i in range(args.repeat):
                started = time.perf_counter()
                export(fmt, pack, mixture, root / f"{fmt}{i}", force=True)
                times.append(time.perf_counter() - started)
            t = min(times)
            print(f"{'export ' + fmt:<28}{t:>9.2f}{mb / t:>9.1f}{base / t:>10.2f}")
        print("(hf materialises the planned rows: here every source is drawn ~1 epoch, so the bytes match)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
