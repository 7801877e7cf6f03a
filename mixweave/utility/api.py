"""``estimate_utility(method, docs, benchmarks, **settings) -> (table, cost)`` and its file I/O.

Methods: ``embedding`` (cheap, CPU, no LLM; the demo default) and ``medu`` (an LLM rates sampled
documents against each benchmark's merged description). Both return the same long table
(``source, benchmark, mean, std, se, ci_low, ci_high, n, n_unparseable``, a pyarrow Table that
:func:`mixweave.data.utility_table.read_utility_table` reads once written) and a JSON-ready cost dict.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixweave.errors import ConfigError, InputError, MixweaveError
from mixweave.utility.aggregate import TABLE_COLUMNS, aggregate_scores, normalize_table
from mixweave.utility.config import UtilityConfig, utility_config
from mixweave.utility.cost import ablation_comparison, inference_flops
from mixweave.utility.sampling import DOC_COLUMNS, load_sampled_docs, sample_docs
from mixweave.utility.secrets import scrub, scrub_text, url_secrets

log = logging.getLogger(__name__)

METHODS = ("embedding", "medu")
DEV_SPLITS = ("dev", "validation", "val", "valid")
STAGE_VERSION = 1
DocVectors = Callable[[Any], Any]
"""sampled documents table -> their embeddings [n, dim] (rows aligned), or None to encode them."""


class IncompleteUtilityError(MixweaveError):
    """Some source x benchmark cell has no rated document: the table would feed NaN to the mixer."""


# -- settings: one class, mixweave.utility.config.UtilityConfig ------------------------------------


def settings_dict(settings: Any) -> dict[str, Any]:
    """JSON-ready settings (objects such as a Backend or an encoder become their type name)."""
    out = {}
    for f in dataclasses.fields(settings):
        v = getattr(settings, f.name)
        ok = v is None or isinstance(v, (str, int, float, bool, list, dict, tuple))
        out[f.name] = v if ok else f"<{type(v).__name__}>"
    return json.loads(json.dumps(out, default=str))


# -- inputs -------------------------------------------------------------------------------------
def read_benchmarks(benchmarks: Any, *, split: str = "auto", max_examples: int | None = None,
                    seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """``benchmarks.jsonl`` records ``{benchmark, split, id, prompt, answer}`` (a path, a list of
    records, or an already grouped ``{benchmark: [records]}``) -> ``{benchmark: [records]}``.

    Records are read and checked by :func:`mixweave.data.benchmarks.read_benchmark_records` (bad
    ones skipped, counted by reason and warned about once; none usable raises InputError).
    ``split='auto'`` keeps dev/validation records for benchmarks that have any (their test split
    stays unseen), else all of them; any other value keeps that split only."""
    return _benchmark_examples(benchmarks, split=split, max_examples=max_examples, seed=seed)[0]


def _benchmark_examples(benchmarks: Any, *, split: str, max_examples: int | None,
                        seed: int) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """:func:`read_benchmarks` and the skipped records by reason."""
    import numpy as np

    from mixweave.data.benchmarks import read_benchmark_records

    if isinstance(benchmarks, Mapping):  # already grouped: {benchmark: [records]}
        benchmarks = [{**r, "benchmark": name} if isinstance(r, Mapping) else r
                      for name, recs in benchmarks.items() for r in recs]
    read = read_benchmark_records(benchmarks)
    grouped: dict[str, list[dict[str, Any]]] = {}
    for r in read.records:
        grouped.setdefault(r["benchmark"], []).append(r)
    out = {}
    for name, recs in sorted(grouped.items()):
        if split == "auto":
            dev = [r for r in recs if str(r.get("split", "")).lower() in DEV_SPLITS]
            chosen = dev or recs
            if not dev:
                log.info("benchmark %s has no dev/validation records: describing it from its %s split", name,
                         "/".join(sorted({str(r.get("split")) for r in recs})))
        else:
            chosen = [r for r in recs if str(r.get("split", "")) == split]
            if not chosen:
                raise InputError(f"benchmark {name!r} has no records with split {split!r}; "
                                 f"it has {sorted({str(r.get('split')) for r in recs})}")
        if max_examples is not None and len(chosen) > max_examples:
            chosen = sorted(chosen, key=lambda r: str(r["id"]))
            pick = sorted(np.random.default_rng(seed).choice(len(chosen), max_examples, replace=False))
            chosen = [chosen[i] for i in pick]
        out[name] = chosen
    return out, dict(read.skipped)


def coerce_docs(docs: Any) -> Any:
    """A pyarrow Table (doc_id, source, text as strings) from a Table, a DataFrame or a list of
    dicts; rows with a null/empty text are dropped (warned). Paths go through
    :func:`~mixweave.utility.sampling.load_sampled_docs` instead."""
    import pyarrow as pa

    if isinstance(docs, pa.Table):
        table = docs
    elif hasattr(docs, "columns") and hasattr(docs, "to_dict"):
        table = pa.Table.from_pandas(docs, preserve_index=False)
    elif isinstance(docs, Sequence) and not isinstance(docs, (str, bytes)):
        rows = list(docs)
        if rows and not all(isinstance(r, Mapping) for r in rows):
            raise InputError("documents must be dicts with doc_id, source, text")
        table = pa.table({c: pa.array([None if r.get(c) is None else str(r.get(c)) for r in rows], pa.string())
                          for c in DOC_COLUMNS})
    else:
        raise InputError(f"documents must be a pyarrow Table, a DataFrame, a list of dicts or a path; "
                         f"got {type(docs).__name__}")
    missing = [c for c in DOC_COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(f"documents lack columns {missing}; give doc_id, source and text")
    table = table.select(list(DOC_COLUMNS)).cast(pa.schema([(c, pa.string()) for c in DOC_COLUMNS]))
    texts = table.column("text").to_pylist()
    keep = [i for i, t in enumerate(texts) if t is not None and t.strip()
            and table.column("doc_id")[i].is_valid and table.column("source")[i].is_valid]
    if len(keep) < table.num_rows:
        log.warning("dropped %d documents with a null id/source or an empty text", table.num_rows - len(keep))
        table = table.take(pa.array(keep, pa.int64()))
    if table.num_rows == 0:
        raise InputError("no documents to rate: the documents table is empty")
    return table


def _sampled(docs: Any, settings: UtilityConfig) -> Any:
    if isinstance(docs, (str, Path)):
        return coerce_docs(load_sampled_docs(docs, settings.per_source, settings.seed))
    return sample_docs(coerce_docs(docs), settings.per_source, settings.seed)


# -- the entry point ----------------------------------------------------------------------------
@dataclass(frozen=True)
class UtilityResult:
    """Everything one estimate produced: the table, the cost report, and for MEDU the per-document
    ratings and the benchmark descriptions the model was shown."""

    table: Any
    cost: dict[str, Any]
    ratings: list[dict[str, Any]] | None = None
    descriptions: dict[str, str] | None = None


def estimate_utility(method: str, docs: Any, benchmarks: Any, **settings: Any) -> tuple[Any, dict[str, Any]]:
    """Utility of each source for each benchmark: ``(table, cost)``.

    ``docs``: documents (pyarrow Table / DataFrame / list of dicts with doc_id, source, text) or a
    path / glob (ingest output, parquet, jsonl); they are sampled per source (``per_source``,
    ``seed``). ``benchmarks``: a benchmarks.jsonl path or its records. ``settings``: the fields of
    :class:`~mixweave.utility.config.UtilityConfig` (``method`` aside)."""
    result = run_estimate(method, docs, benchmarks, **settings)
    return result.table, result.cost


def run_estimate(method: str, docs: Any, benchmarks: Any, *, doc_vectors: DocVectors | None = None,
                 **settings: Any) -> UtilityResult:
    """:func:`estimate_utility` with the ratings and descriptions kept (what the CLI writes).

    ``doc_vectors`` (embedding only): a function from the sampled documents table to their
    L2-normalised embeddings (rows aligned), computed elsewhere with the same encoder and
    ``max_tokens`` (the run's ``embed`` artifact); it may return None to have them encoded here.
    Raises BackendError when every MEDU rating request failed (nothing worth writing)."""
    if method not in METHODS:
        raise ConfigError(f"utility method must be one of {', '.join(METHODS)}, got {method!r}")
    s = utility_config(method, **settings).resolved()
    if method == "medu" and isinstance(s.backend, str):
        from mixweave.utility.backend import check_backend_settings

        check_backend_settings(s.backend, s.model, s.backend_options)
    t0 = time.perf_counter()
    examples, skipped = _benchmark_examples(benchmarks, split=s.split, max_examples=s.max_examples, seed=s.seed)
    sample = _sampled(docs, s)
    t_sample = time.perf_counter() - t0
    ratings = descriptions = None
    if method == "embedding":
        table, cost = _embedding(sample, examples, s, doc_vectors)
    else:
        table, cost, ratings, descriptions = _medu(sample, examples, s)
    table, norm = normalize_table(table, s.normalize)
    source_list = sample.column("source").to_pylist()
    sources = sorted(set(source_list))
    cost.update({
        "method": method, "settings": settings_dict(s),
        "n_sources": len(sources), "n_benchmarks": len(examples), "n_docs": sample.num_rows,
        "docs_per_source": {src: source_list.count(src) for src in sources},
        "examples_per_benchmark": {b: len(v) for b, v in examples.items()},
        "benchmark_records_skipped": skipped,
        "normalize": {"method": s.normalize, "per_benchmark": norm},
    })
    cost["ablation"] = ablation_comparison(cost["flops"]["estimator"], n_sources=len(sources),
                                           ablation_params=s.ablation_params, ablation_tokens=s.ablation_tokens)
    cost["wall_s"]["sample"] = round(t_sample, 3)
    cost["wall_s"]["total"] = round(time.perf_counter() - t0, 3)
    return scrub_result(UtilityResult(table, _json_ready(cost), ratings, descriptions), known_secrets(s))


def _embedding(sample: Any, examples: dict[str, list[dict[str, Any]]], s: UtilityConfig,
               doc_vectors: DocVectors | None = None) -> tuple[Any, dict]:
    from mixweave.utility.embedding import embedding_document_scores

    vectors = doc_vectors(sample) if doc_vectors is not None else None
    rows, info = embedding_document_scores(sample, examples, encoder=s.encoder, top_k=s.top_k,
                                           max_tokens=s.max_tokens, batch_size=s.batch_size, device=s.device,
                                           backend=s.encoder_backend, doc_emb=vectors)
    table = aggregate_scores(rows, n_boot=s.n_boot, alpha=s.alpha, seed=s.seed,
                             sources=sorted(set(sample.column("source").to_pylist())), benchmarks=sorted(examples))
    tokens = info["tokens_in"] or 0
    cost = {"estimator": {k: v for k, v in info.items() if k != "wall_s"},
            "tokens": {"in": tokens, "out": 0, "out_per_rating": 0.0},
            "flops": {"estimator": inference_flops(info["encoder_params"], tokens),
                      "formula": "2 x encoder params x tokens read"},
            "wall_s": dict(info["wall_s"])}
    return table, cost


def _open_cache(spec: Any) -> tuple[Any, bool]:
    from mixweave.utility.cache import ResultCache

    if isinstance(spec, ResultCache):
        return spec, False
    return ResultCache(spec), True


def _medu(sample: Any, examples: dict[str, list[dict[str, Any]]], s: UtilityConfig) -> tuple[Any, dict, list, dict]:
    from mixweave.utility.backend import Backend, make_backend
    from mixweave.utility.medu import describe_benchmarks, rate_documents
    from mixweave.utility.prompts import load_prompts

    opts = s.medu_options()
    prompts = load_prompts(s.prompt_version)
    t0 = time.perf_counter()
    own_backend = not isinstance(s.backend, Backend)
    backend = make_backend(s.backend, s.model, **s.backend_options) if own_backend else s.backend
    t_load = time.perf_counter() - t0
    cache, own_cache = _open_cache(s.cache)
    try:
        t1 = time.perf_counter()
        given = _given_descriptions(s.descriptions, examples)
        if given is None:
            descriptions, describe_info = describe_benchmarks(backend, examples, prompts, opts, cache)
        else:
            descriptions, describe_info = given, {"given": True}
        t_describe = time.perf_counter() - t1
        ratings, usage = rate_documents(backend, [dict(zip(DOC_COLUMNS, r)) for r in zip(
            *(sample.column(c).to_pylist() for c in DOC_COLUMNS))], descriptions, prompts, opts, cache)
        info = backend.info()
    finally:
        if own_cache:
            cache.close()
        if own_backend:
            backend.close()
    _raise_if_all_failed(ratings, info)
    table = aggregate_scores(ratings, n_boot=s.n_boot, alpha=s.alpha, seed=s.seed,
                             sources=sorted(set(sample.column("source").to_pylist())), benchmarks=sorted(examples))
    n_params = s.model_params or info.get("n_params")
    d_usage = describe_info.get("usage", {})
    all_in = (usage.tokens_in + usage.cached_tokens_in + d_usage.get("tokens_in", 0)
              + d_usage.get("cached_tokens_in", 0))
    all_out = (usage.tokens_out + usage.cached_tokens_out + d_usage.get("tokens_out", 0)
               + d_usage.get("cached_tokens_out", 0))
    n_rated = max(1, usage.prompts - usage.failed)
    if n_params is None:
        log.warning("model parameter count unknown: set model_params for the FLOPs estimate")
    cost = {
        "estimator": info,
        "mode": s.mode,
        "prompt_version": prompts.version,
        "describe": describe_info,
        "rate": usage.as_dict(),
        "n_ratings": usage.prompts, "n_failed": usage.failed,
        "n_unparseable": int(sum(1 for r in ratings if r["score"] is None and not r["error"])),
        "tokens": {
            "in": all_in, "out": all_out,
            "in_this_run": usage.tokens_in + d_usage.get("tokens_in", 0),
            "out_this_run": usage.tokens_out + d_usage.get("tokens_out", 0),
            "rate_in_per_rating": (usage.tokens_in + usage.cached_tokens_in) / n_rated,
            "out_per_rating": (usage.tokens_out + usage.cached_tokens_out) / n_rated,
        },
        "flops": {"estimator": inference_flops(n_params, all_in + all_out),
                  "this_run": inference_flops(n_params, usage.tokens_in + usage.tokens_out
                                              + d_usage.get("tokens_in", 0) + d_usage.get("tokens_out", 0)),
                  "formula": "2 x model params x (tokens in + tokens out), cached work included in 'estimator'"},
        "wall_s": {"load_model": round(t_load, 3), "describe": round(t_describe, 3), "rate": round(usage.wall_s, 3)},
    }
    return table, cost, ratings, descriptions


def _raise_if_all_failed(ratings: Sequence[Mapping[str, Any]], info: Mapping[str, Any]) -> None:
    """BackendError when no rating request got an answer: an all-NaN table is never a result."""
    from mixweave.utility.medu import BackendError

    failed = [r for r in ratings if r.get("error")]
    if not ratings or len(failed) < len(ratings):
        return
    where = f"{info.get('kind', 'LLM')} backend, model {info.get('served_model') or info.get('model_id')!r}"
    if info.get("base_url"):
        where += f" at {info['base_url']}"
    raise BackendError(f"all {len(ratings)} rating requests to the {where} failed (first error: "
                       f"{_one_line(failed[0]['error'])}); check that the server is up and serves that model, the "
                       "API key and backend_options (base_url, timeout_s, max_retries), then re-run: nothing was "
                       "written and finished work is cached")


def _one_line(text: Any, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _given_descriptions(spec: Any, examples: Mapping[str, Any]) -> dict[str, str] | None:
    if spec is None:
        return None
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if not path.is_file():
            raise InputError(f"descriptions file {path} does not exist; give a JSON {{benchmark: text}}")
        spec = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(spec, Mapping):
        raise ConfigError("descriptions must be a mapping {benchmark: description} or a JSON file of one")
    missing = sorted(set(examples) - set(spec))
    if missing:
        raise ConfigError(f"descriptions lack benchmarks {missing}; add them or drop descriptions to generate all")
    return {b: str(spec[b]) for b in examples}


# -- an existing table ---------------------------------------------------------------------------
def table_result(path: str | Path) -> UtilityResult:
    """``--method table``: an existing utility table (parquet/csv, long or wide, optional std, se,
    ci_low/ci_high, n) read with the shared reader the mixers use and rewritten in the standard long
    format; no model runs. The interval is the table's own when it has one, else mean +- 1.96 se
    when the standard error is known (given, or std / sqrt(n)), else NaN (unknown: a per-document
    std alone says nothing about the mean's uncertainty); ``se`` is NaN when unknown; ``n`` is the
    table's, else 0 (unknown)."""
    import pyarrow as pa

    from mixweave.data.utility_table import read_utility_table

    t0 = time.perf_counter()
    table = read_utility_table(path)
    nan = float("nan")

    def cell(arr: Any, i: int, j: int, default: float = nan) -> float:
        return float(arr[i, j]) if arr is not None else default

    rows = []
    for i, source in enumerate(table.sources):
        for j, bench in enumerate(table.benchmarks):
            mean, se = float(table.scores[i, j]), cell(table.se, i, j)
            if table.ci_low is not None and table.ci_high is not None:
                lo, hi = cell(table.ci_low, i, j), cell(table.ci_high, i, j)
            else:
                lo, hi = mean - 1.96 * se, mean + 1.96 * se  # NaN when se is unknown
            rows.append({"source": source, "benchmark": bench, "mean": mean, "std": cell(table.std, i, j),
                         "se": se, "ci_low": lo, "ci_high": hi, "n": int(cell(table.n, i, j, 0)),
                         "n_unparseable": 0})
    schema = pa.schema([("source", pa.string()), ("benchmark", pa.string()), ("mean", pa.float64()),
                        ("std", pa.float64()), ("se", pa.float64()), ("ci_low", pa.float64()),
                        ("ci_high", pa.float64()), ("n", pa.int64()), ("n_unparseable", pa.int64())])
    wall = round(time.perf_counter() - t0, 3)
    cost = {"method": "table", "source_file": str(path), "tokens": {"in": 0, "out": 0, "out_per_rating": 0.0},
            "flops": {"estimator": 0.0}, "wall_s": {"total": wall}, "n_sources": len(table.sources),
            "n_benchmarks": len(table.benchmarks), "n_docs": 0, "ablation": {}}
    return UtilityResult(pa.Table.from_pylist(rows, schema=schema), cost)


# -- secrets ------------------------------------------------------------------------------------
def known_secrets(settings: Any) -> list[str]:
    """Credential values the settings lead to: the openai API key from its environment variable and
    the credentials inside ``base_url`` (see :mod:`.secrets`)."""
    backend = getattr(settings, "backend", None)
    if backend is None:
        return []
    if not isinstance(backend, str):
        return list(getattr(backend, "_secrets", ()))
    opts = getattr(settings, "backend_options", None) or {}
    if backend != "openai" or not isinstance(opts, Mapping):
        return []
    env = opts.get("api_key_env", "OPENAI_API_KEY")
    found = [os.environ.get(env, "")] if isinstance(env, str) and env else []
    if isinstance(opts.get("base_url"), str):
        found += url_secrets(opts["base_url"])
    return [x for x in found if x]


def scrub_result(result: UtilityResult, secrets: Sequence[str] = ()) -> UtilityResult:
    """``result`` with every secret (known values, URL credentials, auth headers) replaced by ``***``
    in the cost report, the ratings' errors and the descriptions."""
    ratings = None if result.ratings is None else [
        {**r, "error": scrub_text(r["error"], secrets)} if r.get("error") else r for r in result.ratings]
    descriptions = None if result.descriptions is None else {
        b: scrub_text(str(d), secrets) for b, d in result.descriptions.items()}
    return UtilityResult(result.table, scrub(result.cost, secrets), ratings, descriptions)


# -- outputs ------------------------------------------------------------------------------------
def check_complete(result: UtilityResult) -> None:
    """IncompleteUtilityError when a source x benchmark cell has no rated document (NaN mean).

    Policy: a utility artifact never holds an empty cell (the mixer would get NaN). Cells with
    some but not all ratings failed are written, with their smaller ``n``, and a warning."""
    rows = result.table.to_pylist()
    empty = [r for r in rows if r["mean"] is None or not math.isfinite(r["mean"])]
    failed = [r for r in result.ratings or () if r.get("error")]
    if empty:
        raise IncompleteUtilityError(_empty_cells_message(empty, len(rows), failed))
    if failed:
        log.warning("utility: %d of %d ratings failed after retries (first error: %s); their cells are "
                    "estimated from fewer documents (see n); force the utility stage to retry them",
                    len(failed), len(result.ratings or ()), _one_line(failed[0]["error"]))


def _empty_cells_message(empty: list[dict[str, Any]], n_cells: int, failed: list[dict[str, Any]]) -> str:
    names = ", ".join(f"{r['source']}/{r['benchmark']}" for r in empty[:5]) + (", ..." if len(empty) > 5 else "")
    cells = {(r["source"], r["benchmark"]) for r in empty}
    n_failed = sum(1 for r in failed if (r["source"], r["benchmark"]) in cells)
    n_unparsed = sum(int(r["n_unparseable"] or 0) for r in empty)
    head = (f"utility: {len(empty)} of {n_cells} source/benchmark cells have no rated document ({names}): "
            f"{n_failed} of their ratings failed, {n_unparsed} were unparseable; nothing was written")
    if n_failed:
        first = next(r for r in failed if (r["source"], r["benchmark"]) in cells)
        return (f"{head}. First error: {_one_line(first['error'])}. Fix the backend and re-run "
                "(finished ratings are cached, failed ones are retried)")
    return (f"{head}. The model's answers could not be read: use mode logprob, a stronger model, a larger "
            "rate_max_tokens or per_source, or drop the benchmark")


def write_utility_files(result: UtilityResult, folder: str | Path) -> None:
    """The utility files (no manifest) into ``folder``: what both the CLI and the run stage write.
    Refuses (IncompleteUtilityError, nothing written) a table with an empty cell; every secret is
    scrubbed from what is written."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from mixweave.data.manifest import write_json_atomic

    folder = Path(folder)
    if tuple(result.table.column_names) != TABLE_COLUMNS:
        raise InputError(f"utility table columns must be {TABLE_COLUMNS}, got {result.table.column_names}")
    check_complete(result)
    result = scrub_result(result)
    table, cost = result.table, result.cost
    pq.write_table(table, folder / "utility.parquet")
    pacsv.write_csv(table, folder / "utility.csv")
    if result.ratings:
        cols = {"source": pa.string(), "doc_id": pa.string(), "benchmark": pa.string(), "score": pa.float64(),
                "label": pa.string(), "tokens_in": pa.int64(), "tokens_out": pa.int64(), "cached": pa.bool_(),
                "error": pa.string()}
        pq.write_table(pa.table({c: pa.array([r.get(c) for r in result.ratings], t) for c, t in cols.items()}),
                       folder / "ratings.parquet")
    if result.descriptions:
        write_json_atomic(folder / "descriptions.json", result.descriptions)
    write_json_atomic(folder / "cost.json", _json_ready(cost))


def write_utility_outputs(result: UtilityResult, out: str | Path, *, config: Mapping[str, Any] | None = None,
                          inputs: Mapping[str, dict] | None = None) -> Path:
    """Write ``utility.parquet``, ``utility.csv``, ``cost.json`` (+ ``ratings.parquet`` and
    ``descriptions.json`` for MEDU) and ``_manifest.json`` last, atomically, into ``out``."""
    from mixweave.data.manifest import atomic_stage_dir, build_manifest, fingerprint, write_json_atomic

    table, cost = result.table, result.cost
    cfg = scrub(dict(config or cost.get("settings") or {}))
    in_sha = {k: str(v.get("sha256", "")) for k, v in (inputs or {}).items()}
    with atomic_stage_dir(out) as tmp:
        write_utility_files(result, tmp)
        manifest = build_manifest(
            stage="utility", stage_version=STAGE_VERSION, config=cfg,
            fingerprint_value=fingerprint("utility", STAGE_VERSION, cfg, in_sha),
            inputs=scrub(dict(inputs or {})), root=tmp,
            counts={"rows": table.num_rows, "n_docs": cost.get("n_docs"), "n_sources": cost.get("n_sources"),
                    "n_benchmarks": cost.get("n_benchmarks")},
            drops={"unparseable": cost.get("n_unparseable", 0), "failed": cost.get("n_failed", 0)},
            timings=cost.get("wall_s", {}))
        write_json_atomic(tmp / "_manifest.json", manifest)
    return Path(out)


def _json_ready(value: Any) -> Any:
    """NaN/inf -> None recursively (cost.json is strict JSON)."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value
