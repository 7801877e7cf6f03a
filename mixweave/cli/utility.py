"""``mixweave utility``: the utility table (source x benchmark) by embedding similarity or MEDU.

With ``--config`` it runs the utility stage of that run config. Otherwise it writes ``OUT/utility.parquet`` (+ csv),
``OUT/cost.json``, for MEDU ``OUT/ratings.parquet`` and ``OUT/descriptions.json``, and
``OUT/_manifest.json`` last. The MEDU rating cache lives next to OUT (``OUT.medu-cache.sqlite``)
so a re-run after a crash only rates what is missing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError
from .common import config_options, load_run_config, refuse_flags_with_config, run_configured_stage

log = logging.getLogger(__name__)


def default_cache_path(out: str | Path) -> Path:
    """The MEDU cache for output folder ``out``: a sibling file, outside the atomically replaced folder."""
    out = Path(out)
    return out.parent / f"{out.name}.medu-cache.sqlite"


def _per_source(value: str | None) -> int | dict[str, int] | None:
    """``100`` -> 100; ``code=50,wiki=200,*=100`` -> mapping; ``all`` -> None."""
    if value is None or value == "all":
        return None
    if "=" not in value:
        try:
            n = int(value)
        except ValueError:
            raise ConfigError(f"--per-source {value!r}: give a number, 'all' or NAME=N,NAME=N") from None
        return n
    out: dict[str, int] = {}
    for part in value.split(","):
        name, _, n = part.partition("=")
        try:
            out[name.strip()] = int(n)
        except ValueError:
            raise ConfigError(f"--per-source {value!r}: {part!r} is not NAME=N") from None
    return out


def _backend_options(backend: str, o: dict[str, Any]) -> dict[str, Any]:
    """The options each backend understands, from the CLI flags (unset flags are left out)."""
    wanted = {
        "transformers": ("device", "dtype", "num_threads", "max_model_len"),
        "vllm": ("tensor_parallel_size", "dtype", "max_model_len", "enforce_eager", "max_logprobs",
                 "gpu_memory_utilization"),
        "openai": ("base_url", "endpoint", "api_key_env", "concurrency", "timeout_s", "max_retries",
                   "tokenizer"),
    }[backend]
    opts = {k: o[k] for k in wanted if o.get(k) is not None}
    if backend == "openai" and o.get("model_params"):
        opts["model_params"] = o["model_params"]
    return opts


@click.command("utility")
@config_options
@click.option("--method", type=click.Choice(["embedding", "medu", "table", "ablation"]), default="embedding",
              show_default=True, help="embedding similarity (CPU), MEDU (an LLM), table (an existing parquet/csv "
              "table, --table), or ablation (a small model trained per source under --flops-budget, on --pack).")
@click.option("--pack", "pack_dir", type=click.Path(file_okay=False), help="[ablation] pack artifact folder.")
@click.option("--flops-budget", type=float, help="[ablation] training FLOPs per source.")
@click.option("--depth", type=int, default=2, show_default=True, help="[ablation] model depth.")
@click.option("--seeds", default="0", show_default=True, help="[ablation] comma-separated seeds (std over seeds).")
@click.option("--docs", "docs", help="Ingest output folder, docs folder, or glob of parquet/jsonl files.")
@click.option("--benchmarks", type=click.Path(dir_okay=False), help="benchmarks.jsonl.")
@click.option("--table", "table_path", type=click.Path(dir_okay=False),
              help="[table] an existing utility table (long: source, benchmark, score|mean[, std]; or wide).")
@click.option("--out", type=click.Path(file_okay=False), help="Without --config: the output folder.")
@click.option("--per-source", default="100", show_default=True, help="Docs sampled per source: N, 'all', or NAME=N,...")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--split", default="auto", show_default=True, help="Benchmark split ('auto': dev/validation if present).")
@click.option("--max-examples", type=int, help="At most N examples per benchmark.")
@click.option("--master", help="Sample documents with Spark on this master (e.g. local[*]); default: in-process.")
@click.option("--encoder", default="default", show_default=True, help="[embedding] local sentence-transformers folder.")
@click.option("--encoder-backend", type=click.Choice(["auto", "torch", "onnx", "openvino"]), default="auto",
              show_default=True, help="[embedding] lossless runtime: auto = torch on CUDA, fp32 OpenVINO on CPU.")
@click.option("--top-k", default=5, show_default=True, type=int, help="[embedding] top-k similarities per document.")
@click.option("--max-tokens", default=256, show_default=True, type=int,
              help="[embedding] tokens of each text the encoder reads (clamped to the model's limit).")
@click.option("--normalize", type=click.Choice(["minmax", "zscore", "none"]),
              help="Per-benchmark normalisation (default: minmax for embedding, none for medu).")
@click.option("--backend", type=click.Choice(["transformers", "vllm", "openai"]), default="transformers",
              show_default=True, help="[medu] LLM backend.")
@click.option("--model", help="[medu] local model folder (transformers, vllm) or served model name (openai).")
@click.option("--mode", type=click.Choice(["generate", "logprob"]), default="generate", show_default=True,
              help="[medu] rate by generated answer or by label probabilities.")
@click.option("--max-doc-tokens", default=2048, show_default=True, type=int, help="[medu] document tokens per prompt.")
@click.option("--temperature", default=0.1, show_default=True, type=float)
@click.option("--describe-max-tokens", default=512, show_default=True, type=int)
@click.option("--rate-max-tokens", default=512, show_default=True, type=int)
@click.option("--batch-size", default=64, show_default=True, type=int,
              help="[medu] prompts per backend call / cache commit.")
@click.option("--cache", "cache_path", type=click.Path(dir_okay=False),
              help="[medu] rating cache (default OUT.medu-cache.sqlite).")
@click.option("--descriptions", type=click.Path(dir_okay=False),
              help="[medu] JSON {benchmark: description}; skips describe.")
@click.option("--device", help="[transformers] cpu, cuda, cuda:1 ...")
@click.option("--dtype", help="[transformers, vllm] auto, bfloat16, float16, float32.")
@click.option("--num-threads", type=int, help="[transformers] torch CPU threads.")
@click.option("--tensor-parallel-size", type=int, help="[vllm] GPUs per model.")
@click.option("--max-model-len", type=int, help="[transformers, vllm] context length (default: the model's own limit).")
@click.option("--enforce-eager/--no-enforce-eager", default=None,
              help="[vllm] skip CUDA-graph capture / compilation (faster start, slower steps; needed on some CPU builds).")
@click.option("--max-logprobs", type=int, help="[vllm] top log-probabilities read at the answer slot (default 20).")
@click.option("--gpu-memory-utilization", type=float, help="[vllm] share of GPU memory for weights + KV cache (default 0.9).")
@click.option("--base-url", help="[openai] e.g. http://127.0.0.1:8000/v1")
@click.option("--endpoint", type=click.Choice(["chat", "completions"]), help="[openai] API style.")
@click.option("--api-key-env", help="[openai] environment variable holding the API key (default OPENAI_API_KEY).")
@click.option("--concurrency", type=int, help="[openai] requests in flight.")
@click.option("--timeout", "timeout_s", type=float,
              help="[openai] wall-clock seconds per attempt (connect to last byte); each retry gets its own.")
@click.option("--max-retries", type=int, help="[openai] retries per request.")
@click.option("--tokenizer", help="[openai] local tokenizer for truncation (default: GPT-2 BPE).")
@click.option("--model-params", type=float, help="[medu] parameter count for FLOPs (needed for openai).")
@click.option("--ablation-params", default=1e9, show_default=True, type=float,
              help="Ablation model size for the cost comparison.")
@click.option("--ablation-tokens", type=float, help="Tokens per ablation run (default 20 x params).")
def command(config_path, overrides, **o: Any) -> None:
    """Estimate the utility of each source for each benchmark (the table `mixweave mix` reads)."""
    from ..utility.api import run_estimate, table_result, write_utility_outputs

    refuse_flags_with_config(config_path, out=o["out"], docs=o["docs"], benchmarks=o["benchmarks"],
                             table=o["table_path"], pack=o["pack_dir"])
    if config_path:
        import json

        import pyarrow.parquet as pq

        config = load_run_config(config_path, overrides)
        if config.utility is None:
            raise ConfigError(f"{config_path} has no utility section: add one (utility: {{method: embedding}})")
        run_configured_stage(config, "utility", force=False)
        folder = Path(config.out) / "utility"
        _print_summary(pq.read_table(folder / "utility.parquet"), json.loads((folder / "cost.json").read_text()), folder)
        return
    if not o["out"]:
        raise ConfigError("give --config CONFIG, or --out DIR with the method's inputs")
    out = Path(o["out"])
    if o["method"] == "ablation":
        if not (o["pack_dir"] and o["benchmarks"] and o["flops_budget"]):
            raise ConfigError("--method ablation needs --pack (a pack folder), --benchmarks and --flops-budget")
        from ..utility.ablation import ablation_utility

        try:
            seeds = [int(x) for x in o["seeds"].split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--seeds {o['seeds']!r}: give comma-separated integers, e.g. 0,1,2") from None
        work = out.parent / f"{out.name}.ablation-runs"  # per-source runs, beside the atomic output folder
        ablation_utility(o["pack_dir"], o["benchmarks"], work, flops_budget=o["flops_budget"], depth=o["depth"],
                         seeds=seeds)
        result = table_result(work / "utility.parquet")
        result.cost.update({"method": "ablation", "runs": str(work)})
        write_utility_outputs(result, out, inputs={"pack": {"path": o["pack_dir"]},
                                                   "benchmarks": {"path": o["benchmarks"], "sha256": _sha(o["benchmarks"])}})
        _print_summary(result.table, result.cost, out)
        return
    if o["method"] == "table":
        if not o["table_path"]:
            raise ConfigError("--method table needs --table PATH (a parquet or csv utility table)")
        result = table_result(o["table_path"])
        write_utility_outputs(result, out, inputs={"table": {"path": o["table_path"], "sha256": _sha(o["table_path"])}})
        _print_summary(result.table, result.cost, out)
        return
    if not o["docs"] or not o["benchmarks"]:
        raise ConfigError(f"--method {o['method']} needs --docs (ingest output or files) and --benchmarks (benchmarks.jsonl)")
    per_source = _per_source(o["per_source"])
    common = {"per_source": per_source, "seed": o["seed"], "split": o["split"], "max_examples": o["max_examples"],
              "ablation_params": o["ablation_params"], "ablation_tokens": o["ablation_tokens"]}
    if o["method"] == "embedding":
        settings = {**common, "encoder": o["encoder"], "top_k": o["top_k"], "max_tokens": o["max_tokens"],
                    "encoder_backend": o["encoder_backend"], "normalize": o["normalize"] or "minmax"}
        if o["device"]:
            settings["device"] = o["device"]
    else:
        if not o["model"]:
            raise ConfigError("--method medu needs --model: a local model folder (transformers, vllm) or the "
                              "served model name (openai, with --base-url)")
        settings = {**common, "backend": o["backend"], "model": o["model"], "mode": o["mode"],
                    "backend_options": _backend_options(o["backend"], o), "max_doc_tokens": o["max_doc_tokens"],
                    "temperature": o["temperature"], "describe_max_tokens": o["describe_max_tokens"],
                    "rate_max_tokens": o["rate_max_tokens"], "batch_size": o["batch_size"],
                    "cache": str(o["cache_path"] or default_cache_path(out)), "descriptions": o["descriptions"],
                    "model_params": o["model_params"], "normalize": o["normalize"] or "none"}
    docs: Any = o["docs"]
    if o["master"]:
        from ..jobs.spark import get_spark
        from ..utility.sampling import sample_docs_spark

        docs = sample_docs_spark(get_spark(o["master"]), o["docs"], per_source, o["seed"])
    result = run_estimate(o["method"], docs, o["benchmarks"], **settings)
    inputs = {"benchmarks": {"path": str(o["benchmarks"]), "sha256": _sha(o["benchmarks"])},
              "docs": {"path": str(o["docs"])}}
    write_utility_outputs(result, out, inputs=inputs)
    _print_summary(result.table, result.cost, out)


def _sha(path: str) -> str:
    from ..data.manifest import sha256_file

    return sha256_file(path)


def _print_summary(table: Any, cost: dict, out: Path) -> None:
    t = table.to_pylist()
    click.echo(f"{'source':<16}{'benchmark':<18}{'mean':>8}{'95% CI':>18}{'n':>6}{'unparsed':>10}")
    for r in t:
        ci = f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}]"
        click.echo(f"{r['source']:<16}{r['benchmark']:<18}{_f(r['mean']):>8}{ci:>18}{r['n']:>6}{r['n_unparseable']:>10}")
    c = cost
    fl = c.get("flops", {}).get("estimator")
    ab = c.get("ablation", {})
    click.echo(f"\ncost: {c['tokens']['in']:,} tokens in, {c['tokens']['out']:,} out "
               f"({c['tokens']['out_per_rating']:.1f} generated per rating), "
               f"{'%.3g' % fl if fl else '?'} FLOPs, {c['wall_s']['total']:.1f}s; one ablation run "
               f"{ab.get('flops_per_run', 0):.3g} FLOPs"
               + (f" ({ab['one_run_over_estimator']:.3g}x)" if ab.get("one_run_over_estimator") else ""), err=True)
    click.echo(f"results: {out / 'utility.parquet'}  (cost: {out / 'cost.json'})", err=True)


def _f(x: Any) -> str:
    return "nan" if x is None or x != x else f"{x:.3f}"
