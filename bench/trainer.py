"""Benchmark: trainer tokens/s (and MFU on CUDA), and dataloader throughput vs naive readers.

1. Training: the compact GPT at each ``--depths`` on real GPT-2 tokens (the test corpus, or
   stdlib sources), fp32 eager on CPU / bf16 + torch.compile on CUDA. tokens/s is measured over
   the second half of the steps (after warm-up/compilation); achieved FLOP/s uses
   6 * params + 12 * layers * d_model * S per token, MFU is printed where the peak is known.
   GPU target of the issue: ``--device cuda --depths 12 --seq-len 2048 --batch-size 16 --steps 40``
   (GPT-2 small, 124M), MFU >= 40% on an H200.
2. Data: windows/s of :class:`MixtureLoader` (in-memory gather by the mixture order) vs (a) a
   torch DataLoader fetching items one by one with the default collate, and (b) re-reading the
   pack's parquet for every batch -- same sampled indices, side by side, with ratios.

    python bench/trainer.py [--depths 2,4] [--seq-len 128] [--batch-size 4] [--steps 8] [--threads N] [--device auto]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="2,4")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--loader-batches", type=int, default=2000)
    args = parser.parse_args()

    import numpy as np
    import torch

    from mixweave.data.windows import read_windows
    from mixweave.trainer.dataset import MixtureLoader, PackDataset
    from mixweave.trainer.model import GPT, GPTConfig
    from mixweave.trainer.plan import load_plan
    from mixweave.trainer.sample_data import build_sample_inputs
    from mixweave.trainer.train import TrainConfig, _device, _peak_flops, train_plan

    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="mixweave-bench-trainer-"))
    corpus = ROOT / "tests" / "data" / "corpus"
    try:
        inputs = build_sample_inputs(root / "inputs", seq_len=args.seq_len,
                                     corpus_dir=corpus if corpus.is_dir() else None, max_epochs=None)
        device = _device(args.device)
        peak = _peak_flops(device, None)
        print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
              f"{torch.get_num_threads()} threads), S={args.seq_len}, batch {args.batch_size}, GPT-2 vocab")
        print(f"{'depth':>5}{'params':>12}{'tokens/s':>12}{'GFLOP/s':>10}{'MFU':>8}{'loss':>16}")
        for depth in [int(d) for d in args.depths.split(",")]:
            records: list[dict] = []
            cfg = TrainConfig(depth=depth, steps=args.steps, batch_size=args.batch_size,
                              log_interval=max(1, args.steps // 2), holdout_windows=0, device=args.device,
                              resume=False)
            plan = load_plan(inputs.pack_dir, inputs.mixture_path)
            result = train_plan(plan, inputs.pack_dir, root / f"run-d{depth}", cfg, on_log=records.append)
            tps = records[-1]["tokens_per_s"]
            with torch.device("meta"):
                model = GPT(GPTConfig.from_depth(depth, vocab_size=50257, seq_len=args.seq_len))
            flops_tok, params = model.flops_per_token(), model.num_params()
            mfu = f"{100 * tps * flops_tok / peak:.1f}%" if peak else "n/a"
            print(f"{depth:>5}{params / 1e6:>11.1f}M{tps:>12,.0f}{tps * flops_tok / 1e9:>10.1f}{mfu:>8}"
                  f"{result.losses[0]:>8.2f}->{result.losses[-1]:.2f}")

        # -- dataloader ---------------------------------------------------------------------------------
        plan = load_plan(inputs.pack_dir, inputs.mixture_path)
        ds = PackDataset(inputs.pack_dir, plan.names)
        n, b = args.loader_batches, args.batch_size
        loader = MixtureLoader(ds, plan, b)
        started = time.perf_counter()
        for _ in range(n):
            loader.next_batch()
        ours = n * b / (time.perf_counter() - started)
        from mixweave.trainer.sampler import MixtureOrder, MixtureSampler

        class ItemOnly(torch.utils.data.Dataset):  # no batched __getitems__: the textbook DataLoader path
            def __len__(self):
                return len(ds)

            def __getitem__(self, i):
                return ds[i]

        sampler = MixtureSampler(MixtureOrder(plan), ds.offsets_for(plan), num_positions=n * b)
        dl = torch.utils.data.DataLoader(ItemOnly(), batch_size=b, sampler=sampler, num_workers=0)
        started = time.perf_counter()
        for _ in dl:
            pass
        per_item = n * b / (time.perf_counter() - started)
        indices = MixtureLoader(ds, plan, b).sampler.take(n * b)
        names = plan.names
        src = np.searchsorted(ds.offsets, indices, side="right") - 1
        m = min(n, 20)
        started = time.perf_counter()
        for k in range(m):
            sl = slice(k * b, (k + 1) * b)
            rows = [read_windows(inputs.pack_dir, names[s])[i - ds.offsets[s]] for s, i in zip(src[sl], indices[sl])]
            torch.from_numpy(np.stack(rows).astype(np.int64))
        reread = m * b / (time.perf_counter() - started)
        token_bytes = len(ds) * ds.window_tokens * np.dtype(ds.dtype).itemsize
        print(f"\ndataloader, windows/s (S={args.seq_len}, batch {b}, {len(ds):,} windows, "
              f"{token_bytes / 1e6:.1f} MB of tokens)")
        print(f"{'MixtureLoader (ours)':<44}{ours:>12,.0f}{1.0:>8.2f}x")
        print(f"{'DataLoader, item-by-item + default collate':<44}{per_item:>12,.0f}{per_item / ours:>8.3f}x")
        print(f"{'re-read pack parquet per window':<44}{reread:>12,.0f}{reread / ours:>8.4f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
