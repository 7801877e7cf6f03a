"""The default tokenizer (GPT-2 BPE) on tiktoken, as mixweave runs it, against Hugging Face
``tokenizers``' byte-level BPE over the same two files (what it ran before), side by side.

    .venv/bin/python bench/tokenizer_speed.py [--repeats 5] [--copies 1]

Texts: the fixture corpus (tests/data/corpus, 449 documents, 1.2 MB) repeated ``--copies`` times.
Prints each side's load and encode CPU and wall seconds (CPU counts every thread: HF spreads a batch
over its thread pool) and the ratio; checks that the ids are equal. Ingest counts every document's
tokens and pack encodes every kept one, so this is most of their Python-side work.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def hf_reference():
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    from mixweave.data.tokenizer import default_tokenizer_files

    encoder_json, vocab_bpe = default_tokenizer_files()
    tok = HFTokenizer(models.BPE.from_file(str(encoder_json), str(vocab_bpe)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return lambda texts: [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def ours():
    from mixweave.data.tokenizer import load_tokenizer

    return load_tokenizer("default").encode_batch


def timed(fn, *args):
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--copies", type=int, default=1)
    args = parser.parse_args()
    texts = [json.loads(line)["text"] for path in sorted((ROOT / "tests/data/corpus").glob("*/*.jsonl"))
             for line in open(path, encoding="utf-8")] * args.copies
    print(f"{len(texts)} documents, {sum(len(t.encode()) for t in texts) / 1e6:.2f} MB")
    results = {}
    for name, load in (("hf tokenizers", hf_reference), ("mixweave (tiktoken)", ours)):
        encode, load_cpu, _ = timed(load)
        ids, _, _ = timed(encode, texts)  # warm-up
        runs = [timed(encode, texts)[1:] for _ in range(args.repeats)]
        cpu, wall = min(r[0] for r in runs), min(r[1] for r in runs)
        results[name] = (ids, cpu, wall)
        print(f"{name:22s} load {load_cpu:5.3f} CPU-s   encode {cpu:6.3f} CPU-s {wall:6.3f} s wall   "
              f"{sum(map(len, ids)) / wall / 1e6:5.2f} M tokens/s")
    (hf_ids, hf_cpu, hf_wall), (our_ids, our_cpu, our_wall) = results.values()
    assert hf_ids == our_ids, "the ids differ"
    print(f"same ids; encode CPU {hf_cpu / our_cpu:.1f}x less, wall {hf_wall / our_wall:.1f}x faster")


if __name__ == "__main__":
    main()
