"""CPU training steps with and without keeping freed memory on the heap (trainer.train.keep_freed_memory).

Runs the same 8 AdamW steps of the compact GPT (depth 1, GPT-2 vocabulary + 1, S 256, batch 8: the
study's proxy) in two fresh processes, one with glibc's defaults and one after ``keep_freed_memory()``,
and prints wall time, page faults and the ratio side by side. Usage: python bench/cpu_heap.py [--steps N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

STEP_LOOP = r"""
import json, resource, sys, time, torch
from mixweave.trainer.model import GPT, GPTConfig
from mixweave.trainer.train import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "kept" else False
steps = int(sys.argv[2])
torch.manual_seed(0)
m = GPT(GPTConfig.from_depth(1, vocab_size=50258, seq_len=256))
opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
x = torch.randint(0, 50257, (8, 257))
before = resource.getrusage(resource.RUSAGE_SELF)
t = time.perf_counter()
for _ in range(steps):
    logits = m(x[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))
    opt.zero_grad(); loss.backward(); opt.step()
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"kept": kept, "wall_s": time.perf_counter() - t, "sys_s": after.ru_stime - before.ru_stime,
                  "faults": after.ru_minflt - before.ru_minflt}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    rows = {}
    for mode in ("default", "kept"):
        out = subprocess.run([sys.executable, "-c", STEP_LOOP, mode, str(args.steps)], check=True,
                             capture_output=True, text=True).stdout
        rows[mode] = json.loads(out.strip().splitlines()[-1])
    for mode, r in rows.items():
        print(f"{mode:8s} wall {r['wall_s']:6.2f} s  sys {r['sys_s']:6.2f} s  page faults {r['faults']:>10,}")
    print(f"speedup {rows['default']['wall_s'] / rows['kept']['wall_s']:.2f}x")


if __name__ == "__main__":
    main()
