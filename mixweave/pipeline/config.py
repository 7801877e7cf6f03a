"""Run configuration: one YAML file parsed into the run config composed of each component's config.

Each component's frozen, keyword-only config sits beside its code and checks itself
(``SparkConfig``/``SourceConfig``/``IngestConfig`` in ``jobs/``, ``TokenizerConfig`` in ``data/``,
``OrderConfig`` in ``retrieval/``, ``UtilityConfig`` in ``utility/``, ``MixConfig`` in ``mixers/``,
``ExportConfig`` in ``pipeline/export/``, ``TrainConfig`` in ``trainer/``); :class:`RunConfig` composes them, and
:func:`parse_config` adds the checks that span sections, so one YAML file is validated whole before
any stage runs.

Unknown keys, missing required keys and values of the wrong type fail at load time with a
:class:`~mixweave.errors.ConfigError` that names the key (as a dotted path) and the fix.
``--set key.sub=value`` overrides are applied to the raw mapping before validation, with the
value parsed as YAML (so ``--set mix.budget_tokens=2e9`` and ``--set spark.master=local[2]`` work).
Relative paths are relative to the working directory the command runs in.
``to_dict()`` gives the plain mapping that goes into stage manifests.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..data.benchmarks import check_skill
from ..data.manifest import check_name
from ..data.tokenizer import TokenizerConfig
from ..data.typed import from_dict, to_plain
from ..errors import ConfigError
from ..jobs.config import IngestConfig, SourceConfig, SparkConfig
from ..mixers.config import MixConfig
from ..mixers.params import method_key
from ..retrieval.config import OrderConfig
from ..trainer.config import TrainConfig
from ..utility.config import UtilityConfig
from .export.config import ExportConfig
from .study_config import StudyConfig, check_study


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    out: str = "out/run"
    seed: int = 0
    spark: SparkConfig = field(default_factory=SparkConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    benchmarks: str | None = None
    benchmark_skills: dict[str, str] | None = None
    """{benchmark: skill} tags over the records' 'skill' and the shipped defaults (knowledge,
    reasoning, code, math, multilingual; mixweave.data.benchmarks.DEFAULT_SKILLS)."""
    ingest: IngestConfig = field(default_factory=IngestConfig)
    order: OrderConfig | None = None
    utility: UtilityConfig | None = None
    mix: MixConfig | None = None
    export: ExportConfig | None = None
    train: TrainConfig | None = None
    study: StudyConfig | None = None

    def to_dict(self) -> dict:
        return to_plain(self)


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


def parse_config(data: Mapping[str, Any]) -> RunConfig:
    """Build and check the whole run config: each section checks itself (``__post_init__``); this
    adds the checks that need two sections at once."""
    config = from_dict(RunConfig, data)
    if not config.out.strip():
        raise ConfigError("out is empty: give the run folder, e.g. out: out/demo (or --out out/demo)")
    for name in config.sources:
        check_name(name, "source name", ConfigError)
    if config.utility is not None and config.utility.method != "table" and not config.benchmarks:
        raise ConfigError(f"utility.method {config.utility.method} needs benchmarks: the path of a benchmarks.jsonl")
    if (config.export is not None or config.train is not None) and (config.mix is None or config.order is None):
        raise ConfigError("export and train need both an order section (windows) and a mix section (mixture.json)")
    if config.mix is not None and config.order is None and method_key(config.mix.method) in ("doremi", "regmix"):
        raise ConfigError(f"mix.method {config.mix.method} trains proxy models on packed windows: add an order "
                          "section (e.g. order: {seq_len: 512}) so the pack stage runs before mix")
    if not config.sources and (config.order or config.mix or config.utility):
        raise ConfigError("sources is empty: add at least one source with its paths")
    for name, skill in (config.benchmark_skills or {}).items():
        check_skill(skill, f"benchmark_skills.{name}")
    check_study(config)
    if config.mix is not None and config.mix.bts is not None:
        from ..mixers.bts import check_bts
        from .export import ALIASES, FORMATS

        if config.order is None:
            raise ConfigError("mix.bts writes its expert and stitch mixtures over the main pack: add an order section "
                              "(e.g. order: {seq_len: 512}) so the pack stage runs before mix")
        check_bts(config.mix.bts, list(config.sources), reserved=(*FORMATS, *ALIASES), seq_len=config.order.seq_len)
    if config.mix is not None and config.mix.phases:
        from ..mixers.long_context import check_phases
        from .export import ALIASES, FORMATS

        check_phases(config.mix.phases, sources=list(config.sources), reserved=(*FORMATS, *ALIASES),
                     order_seq_len=None if config.order is None else config.order.seq_len, method=config.mix.method,
                     unit=config.mix.unit, learned=method_key(config.mix.method) in ("doremi", "regmix"))
    return config


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    return parse_config(apply_overrides(load_raw(path), overrides or []))
