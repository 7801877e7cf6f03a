"""The mixture manifest (``mixture.json``, schema version 2): build, write atomically, read + validate.

Version 2 adds the optional ``variants`` list (more complete training recipes beside the main
mixture, each its own mixture.json over its own pack: sequence-length phases, branch-train-stitch
experts); version 1 files (no variants) stay readable. :func:`mixture_variants` resolves them.

The JSON Schema lives next to this module (``schemas/mixture.schema.json``). Every read validates
against it and then checks what a schema cannot say (weights sum to 1, target_tokens = weight *
budget, epochs = target / n_tokens <= max_epochs, unique names, the window convention, phases
adding up); any problem raises ManifestError naming the JSON path (``$.sources[2].weight``) and the
fix. Writes are atomic (temp file + ``os.replace``) with sorted keys, so the same mixture gives the
same bytes.

This module sits in ``mixweave.data`` and imports nothing of ours but ``mixweave.errors``: a
mixture is read through its attributes (``weights``, ``epochs``, ... as on
``mixweave.mixers.Mixture``).
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mixweave.data.manifest import check_name, write_text_atomic
from mixweave.errors import InputError, ManifestError

SCHEMA_VERSION = 2
#: Versions this reader accepts (1: no variants).
READABLE_VERSIONS = (1, 2)
VARIANT_KINDS = ("phase", "expert", "stitch")
#: The keys every variants entry has; anything else is a kind-specific extra (Variant.extra).
VARIANT_KEYS = ("name", "kind", "mixture", "pack", "seq_len", "budget_tokens")
SCHEMA_RESOURCE = "schemas/mixture.schema.json"
#: Relative tolerance of the arithmetic checks (weights sum, target = weight * budget, ...).
RTOL = 1e-6
TOKENIZER_FIELDS = ("name", "path", "sha256", "vocab_size", "eos_id", "dtype")
DTYPE_LIMITS = {"uint16": 2**16, "uint32": 2**32, "int32": 2**31, "int64": 2**63}


@functools.lru_cache(maxsize=1)
def mixture_schema() -> dict[str, Any]:
    """The JSON Schema of mixture.json (v2; v1 files validate against it too)."""
    text = resources.files("mixweave.data").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    return json.loads(text)


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(mixture_schema())


def default_window(seq_len: int) -> dict[str, Any]:
    """Windows of exactly seq_len tokens, documents joined with EOS, labels shifted inside."""
    return {"tokens": int(seq_len), "doc_separator": "eos", "labels": "shift_within_window"}


def _number(x: Any) -> Any:
    """Floats that are whole numbers of tokens as ints (stable, readable JSON); others unchanged."""
    if isinstance(x, float) and math.isfinite(x) and x.is_integer() and abs(x) < 2**53:
        return int(x)
    return x


def _plain(value: Any) -> Any:
    """Mappings/sequences/numpy scalars as plain JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _method_block(mixture: Any) -> dict[str, Any]:
    objective = mixture.objective
    return {"name": mixture.method, "params": _plain(dict(mixture.params)), "solver": mixture.solver,
            "status": mixture.status, "objective": None if objective is None else float(objective)}


def _utility_dict(utility: Any) -> dict[str, dict[str, float]]:
    if utility is None:
        return {}
    if hasattr(utility, "as_dict"):
        utility = utility.as_dict()
    if not isinstance(utility, Mapping):
        raise InputError(f"utility must be {{source: {{benchmark: score}}}}, got {type(utility).__name__}")
    return {str(s): {str(b): float(v) for b, v in row.items()} for s, row in utility.items()}


def _tokenizer_block(tokenizer: Mapping[str, Any] | None, stats: Mapping[str, Any]) -> dict[str, Any]:
    tok = tokenizer if tokenizer is not None else stats.get("tokenizer")
    if not isinstance(tok, Mapping):
        raise InputError("no tokenizer description: pass tokenizer={name, path, sha256, vocab_size, "
                         "eos_id, dtype} or use a stats.json that has one")
    missing = [f for f in TOKENIZER_FIELDS if f not in tok]
    if missing:
        raise InputError(f"tokenizer description lacks {', '.join(missing)}; the tokenizer stage "
                         "records all of name, path, sha256, vocab_size, eos_id, dtype")
    return {f: _plain(tok[f]) for f in TOKENIZER_FIELDS}


def _bytes_per_token(entry: Mapping[str, Any]) -> float | None:
    rate = entry.get("bytes_per_token")  # never n_bytes / n_tokens: a pack's stats replace n_tokens
    if rate is None or not math.isfinite(float(rate)) or float(rate) <= 0:
        return None
    return float(rate)


def _phase_block(index: int, phase: Any) -> dict[str, Any]:
    return {"name": f"phase_{index}", "budget_tokens": _number(float(phase.budget_tokens)),
            "method": _method_block(phase),
            "weights": {n: float(w) for n, w in phase.weights.items()},
            "epochs": {n: float(e) for n, e in phase.epochs.items()}}


def build_mixture_manifest(mixture: Any, stats: Mapping[str, Any], *, seq_len: int,
                           tokenizer: Mapping[str, Any] | None = None, seed: int,
                           utility: Any = None, order: Mapping[str, Any] | None = None,
                           phases: Sequence[Any] | None = None,
                           window: Mapping[str, Any] | None = None, unit: str = "tokens",
                           budget_bytes: float | None = None,
                           variants: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """mixture.json v2 as a dict, validated.

    ``mixture``: a solved Mixture; ``stats``: the ingest stats.json dict (paths, n_docs, and the
    tokenizer when ``tokenizer`` is None); ``utility``: {source: {benchmark: score}} or a
    UtilityTable (default: the mixture's own); ``order``: {method, windows} once windows exist;
    ``phases``: the per-phase Mixtures of a multi-phase run (their budgets add up to the
    mixture's); ``window``: default :func:`default_window`; ``unit``: the unit the mixture was
    solved in (tokens, or bytes with ``budget_bytes``, the byte budget it was solved for);
    ``variants``: the ``variants`` entries (written only when non-empty; each entry's mixture file
    is written by the caller beside this one).

    Both units are written whenever stats gives each source's ``bytes_per_token`` (the count
    stage's): per source ``bytes_per_token``, ``n_bytes`` and
    ``target_bytes`` (= the token figures x bytes per token) and ``budget_bytes`` (= their sum).
    """
    stats_sources = stats.get("sources") if isinstance(stats, Mapping) else None
    if not isinstance(stats_sources, Mapping):
        raise InputError("stats has no 'sources' object; pass the stats.json written by the count stage")
    missing = [n for n in mixture.weights if n not in stats_sources]
    if missing:
        raise InputError(f"stats.json has no entry for sources {', '.join(missing)}; re-run the count "
                         "stage or solve the mixture from this stats.json")
    utility_rows = _utility_dict(utility if utility is not None else getattr(mixture, "utility", None))
    sources = []
    for name, weight in mixture.weights.items():
        entry = stats_sources[name]
        n_tokens = float(mixture.n_tokens[name])
        if not math.isclose(float(entry.get("n_tokens", math.nan)), n_tokens, rel_tol=RTOL):
            raise InputError(f"source {name}: the mixture was solved for {n_tokens:.0f} tokens but "
                             f"stats.json says {entry.get('n_tokens')}; re-run the mix stage")
        if entry.get("n_docs") is None:
            raise InputError(f"stats.json: sources.{name} has no n_docs; re-run the count stage")
        cap = mixture.max_epochs[name]
        sources.append({
            "name": name,
            "paths": [str(p) for p in entry.get("paths") or ()],
            "n_docs": int(entry["n_docs"]),
            "n_tokens": _number(n_tokens),
            "weight": float(weight),
            "target_tokens": float(mixture.target_tokens[name]),
            "epochs": float(mixture.epochs[name]),
            "max_epochs": None if cap is None else float(cap),
            "binding": mixture.binding[name],
            "utility": utility_rows.get(name, {}),
        })
        rate = _bytes_per_token(entry)
        if rate is not None:
            sources[-1].update(bytes_per_token=rate, n_bytes=n_tokens * rate,
                               target_bytes=float(mixture.target_tokens[name]) * rate)
    both = all("bytes_per_token" in s for s in sources)
    if unit not in ("tokens", "bytes"):
        raise InputError(f"unit must be tokens or bytes, got {unit!r}")
    if unit == "bytes" and not both:
        raise InputError("a mixture solved in bytes needs each source's bytes per token in stats.json; "
                         "re-run the count stage")
    if not isinstance(seq_len, int) or isinstance(seq_len, bool):
        raise InputError(f"seq_len must be an integer number of tokens, got {seq_len!r}")
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "unit": unit,
        "seq_len": seq_len,
        "window": _plain(dict(window)) if window is not None else default_window(seq_len),
        "tokenizer": _tokenizer_block(tokenizer, stats),
        "budget_tokens": _number(float(mixture.budget_tokens)),
        "seed": seed,
        "method": _method_block(mixture),
        "sources": sources,
        "order": None if order is None else _plain(dict(order)),
    }
    if both:
        manifest["budget_bytes"] = _number(float(sum(s["target_bytes"] for s in sources)))
        if unit == "bytes" and budget_bytes is not None and _close(float(budget_bytes), manifest["budget_bytes"], 0.0):
            manifest["budget_bytes"] = _number(float(budget_bytes))  # the budget asked for, not its float sum
    if phases:
        manifest["phases"] = [_phase_block(i, p) for i, p in enumerate(phases)]
    if variants:
        manifest["variants"] = [_plain(dict(v)) for v in variants]
    problems = manifest_problems(manifest)
    if problems:
        raise InputError(f"the mixture manifest would be invalid: {problems[0]}")
    return manifest


def _json_path(parts: Sequence[Any]) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _non_finite_paths(value: Any, path: tuple = ()) -> list[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return [_json_path(path)]
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _non_finite_paths(v, path + (k,))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _non_finite_paths(v, path + (i,))]
    return []


def _close(a: float, b: float, scale: float) -> bool:
    return abs(a - b) <= RTOL * max(abs(a), abs(b), scale)


def _semantic_problems(m: dict[str, Any]) -> list[str]:
    problems = []
    window, tok = m["window"], m["tokenizer"]
    want = m["seq_len"] + (1 if window["labels"] == "extra_token" else 0)
    if window["tokens"] != want:
        problems.append(f"$.window.tokens: {window['tokens']} does not match seq_len {m['seq_len']} "
                        f"with labels={window['labels']!r} (expected {want})")
    if tok["eos_id"] >= tok["vocab_size"]:
        problems.append(f"$.tokenizer.eos_id: {tok['eos_id']} is not below vocab_size {tok['vocab_size']}")
    if tok["vocab_size"] > DTYPE_LIMITS[tok["dtype"]]:
        problems.append(f"$.tokenizer.dtype: {tok['dtype']} cannot hold vocab_size {tok['vocab_size']}")
    budget, sources = m["budget_tokens"], m["sources"]
    names = [s["name"] for s in sources]
    for i, s in enumerate(sources):
        at = f"$.sources[{i}]"
        if names.index(s["name"]) != i:
            problems.append(f"{at}.name: source {s['name']!r} is listed twice")
        if not _close(s["target_tokens"], s["weight"] * budget, RTOL * budget):
            problems.append(f"{at}.target_tokens: {s['target_tokens']} != weight * budget_tokens "
                            f"({s['weight'] * budget})")
        if not _close(s["epochs"], s["target_tokens"] / s["n_tokens"], RTOL):
            problems.append(f"{at}.epochs: {s['epochs']} != target_tokens / n_tokens "
                            f"({s['target_tokens'] / s['n_tokens']})")
        if s["max_epochs"] is not None and s["epochs"] > s["max_epochs"] * (1 + RTOL):
            problems.append(f"{at}.epochs: {s['epochs']} exceeds max_epochs {s['max_epochs']} for "
                            f"source {s['name']!r}")
    problems += _byte_problems(m)
    total = sum(s["weight"] for s in sources)
    if not math.isclose(total, 1.0, abs_tol=RTOL):
        problems.append(f"$.sources[*].weight: weights sum to {total}, not 1")
    problems += _phase_problems(m, names)
    problems += _variant_problems(m)
    return problems


def _variant_problems(m: dict[str, Any]) -> list[str]:
    """Variants only in v2, unique names, each mixture file named after its variant, packs inside
    the pack artifact (relative, no '..')."""
    variants = m.get("variants")
    if variants is None:
        return []
    if m["schema_version"] < 2:
        return ["$.variants: variants need schema_version 2"]
    problems, seen = [], set()
    for i, v in enumerate(variants):
        at = f"$.variants[{i}]"
        if v["name"] in seen:
            problems.append(f"{at}.name: variant {v['name']!r} is listed twice")
        seen.add(v["name"])
        if v["mixture"] != f"variants/{v['name']}.json":
            problems.append(f"{at}.mixture: {v['mixture']!r} is not variants/{v['name']}.json")
        pack = v["pack"]
        if pack is not None and not _inside(pack):
            problems.append(f"{at}.pack: {pack!r} leaves the pack artifact folder; use a relative path such as "
                            "phases/<phase>, or null for the main pack")
    return problems


def _inside(rel: str) -> bool:
    """A relative POSIX path that stays in its folder (no absolute path, no '..', no backslash)."""
    parts = rel.split("/")
    return (not rel.startswith("/") and "\\" not in rel and ":" not in rel
            and all(p not in ("", ".", "..") for p in parts))


def _byte_problems(m: dict[str, Any]) -> list[str]:
    """Both units agree through each source's bytes per token, and budget_bytes is their sum."""
    sources, problems = m["sources"], []
    with_bytes = ["bytes_per_token" in s for s in sources]
    if m["unit"] == "bytes" and not all(with_bytes):
        return ["$.sources: a mixture solved in bytes needs bytes_per_token, n_bytes and target_bytes per source"]
    if any(with_bytes) and not all(with_bytes):
        return ["$.sources: bytes_per_token is given for some sources only"]
    if not any(with_bytes):
        return ["$.budget_bytes: given without the sources' bytes_per_token"] if "budget_bytes" in m else []
    for i, s in enumerate(sources):
        rate = s["bytes_per_token"]
        for key, tokens in (("n_bytes", "n_tokens"), ("target_bytes", "target_tokens")):
            if key not in s:
                problems.append(f"$.sources[{i}].{key}: missing beside bytes_per_token")
            elif not _close(s[key], s[tokens] * rate, RTOL):
                problems.append(f"$.sources[{i}].{key}: {s[key]} != {tokens} x bytes_per_token ({s[tokens] * rate})")
    if problems:
        return problems
    total = sum(s["target_bytes"] for s in sources)
    if "budget_bytes" not in m:
        problems.append("$.budget_bytes: missing although every source has bytes_per_token")
    elif not _close(m["budget_bytes"], total, 0.0):
        problems.append(f"$.budget_bytes: {m['budget_bytes']} != the sources' target_bytes sum {total}")
    return problems


def _phase_problems(m: dict[str, Any], names: list[str]) -> list[str]:
    phases = m.get("phases")
    if not phases:
        return []
    problems = []
    budget = sum(p["budget_tokens"] for p in phases)
    if not _close(budget, m["budget_tokens"], 0.0):
        problems.append(f"$.phases[*].budget_tokens: phase budgets sum to {budget}, not budget_tokens "
                        f"{m['budget_tokens']}")
    for i, p in enumerate(phases):
        for key in ("weights", "epochs"):
            if sorted(p[key]) != sorted(names):
                problems.append(f"$.phases[{i}].{key}: sources {sorted(p[key])} differ from "
                                f"$.sources {sorted(names)}")
        if not math.isclose(sum(p["weights"].values()), 1.0, abs_tol=RTOL):
            problems.append(f"$.phases[{i}].weights: weights sum to {sum(p['weights'].values())}, not 1")
    for j, s in enumerate(m["sources"]):
        used = sum(p["epochs"].get(s["name"], 0.0) for p in phases)
        if not _close(used, s["epochs"], RTOL):
            problems.append(f"$.sources[{j}].epochs: {s['epochs']} != the phases' total {used}")
    return problems


def manifest_problems(manifest: Any) -> list[str]:
    """Every problem of ``manifest`` as ``"<json path>: <what is wrong>"``; empty when valid."""
    bad = _non_finite_paths(manifest)
    if bad:
        return [f"{p}: NaN or infinity is not allowed" for p in bad]
    errors = sorted(_validator().iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        return [f"{e.json_path}: {e.message}" for e in errors]
    return _semantic_problems(manifest)


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The canonical serialisation: sorted keys, 2-space indent, no NaN, trailing newline."""
    return (json.dumps(manifest, sort_keys=True, indent=2, allow_nan=False) + "\n").encode("utf-8")


def write_mixture_manifest(path: str | os.PathLike[str], manifest: Mapping[str, Any]) -> Path:
    """Validate and write ``manifest`` atomically (:func:`~mixweave.data.manifest.write_text_atomic`)."""
    problems = manifest_problems(manifest)
    if problems:
        raise ManifestError(f"refusing to write an invalid mixture manifest to {path}: {problems[0]}"
                            + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, manifest_bytes(manifest).decode("utf-8"))
    return path


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def read_mixture_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate mixture.json; ManifestError names the file, the JSON path and the fix."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"no mixture manifest at {path}; run `mixweave mix` first") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read mixture manifest {path}: {exc}") from exc
    try:
        manifest = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise ManifestError(f"{path} is not valid JSON ({exc}); re-run `mixweave mix`") from exc
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > max(READABLE_VERSIONS):
        raise ManifestError(f"{path}: $.schema_version is {version}, newer than this mixweave "
                            f"understands ({max(READABLE_VERSIONS)}); upgrade mixweave")
    problems = manifest_problems(manifest)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise ManifestError(f"{path}: invalid mixture manifest: {problems[0]}{more}; "
                            "re-run `mixweave mix` to regenerate it")
    for source in manifest["sources"]:
        check_name(source["name"], f"{path}: source name")  # exporters and the trainer turn it into paths
    return manifest


@dataclass(frozen=True)
class Variant:
    """One entry of mixture.json's ``variants``, paths resolved: ``mixture_path`` (its own
    mixture.json), ``pack_dir`` (the pack its windows come from), ``extra`` (the kind-specific keys:
    a phase's share and long_docs block, a bts expert's domain sources, ...)."""

    name: str
    kind: str
    mixture_path: Path
    pack_dir: Path
    seq_len: int
    budget_tokens: float
    extra: dict[str, Any] = field(default_factory=dict)


def mixture_variants(mixture_path: str | os.PathLike[str],
                     pack_root: str | os.PathLike[str] | None = None) -> list[Variant]:
    """The variants of the mixture at ``mixture_path`` in file order ([] when it has none).

    ``pack_root``: the pack artifact folder (default: ``../pack`` beside the mix folder, as a run's
    out folder has it). A bad entry (unknown kind, a path that leaves its folder, a variant mixture
    or pack folder that does not exist) raises one ManifestError naming the entry and the fix.
    """
    mixture_path = Path(mixture_path)
    manifest = read_mixture_manifest(mixture_path)
    entries = manifest.get("variants") or []
    mix_dir = mixture_path.parent
    root = Path(pack_root) if pack_root is not None else mix_dir.parent / "pack"
    out = []
    for i, v in enumerate(entries):
        at = f"{mixture_path}: $.variants[{i}] ({v['name']})"
        if v["kind"] not in VARIANT_KINDS:  # the schema already refuses it; kept for hand-made dicts
            raise ManifestError(f"{at}: unknown kind {v['kind']!r}; use one of {', '.join(VARIANT_KINDS)}")
        path = mix_dir / v["mixture"]
        if not path.is_file():
            raise ManifestError(f"{at}: its mixture {path} does not exist; re-run `mixweave mix`")
        pack = v["pack"]
        pack_dir = root if pack is None else root / pack
        if not pack_dir.is_dir():
            raise ManifestError(f"{at}: its pack folder {pack_dir} does not exist; re-run the pack stage "
                                "(or pass pack_root= the pack artifact folder)")
        out.append(Variant(name=v["name"], kind=v["kind"], mixture_path=path, pack_dir=pack_dir,
                           seq_len=int(v["seq_len"]), budget_tokens=float(v["budget_tokens"]),
                           extra={k: val for k, val in v.items() if k not in VARIANT_KEYS}))
    return out
