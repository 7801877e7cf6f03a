"""The mixture result type and the validation of what callers pass in (sources, budgets, caps).

Units: everything is in *tokens*. A weight is a share of the training budget's tokens;
``target_tokens = weight * budget_tokens`` and ``epochs = target_tokens / n_tokens``.

Zero-token sources are rejected (InputError) rather than silently given weight 0: a source with no
tokens is almost always a wrong glob or a failed ingest, and a weight for it can never be honoured.
The message tells the user to remove the source or fix its paths.
"""

from __future__ import annotations

import math
from collections.abc import ItemsView, Iterator, Mapping, Sequence, ValuesView
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from mixweave.data.typed import MAX_NAMES_IN_MESSAGE, is_number, name_list  # noqa: F401 - used across mixers
from mixweave.errors import ConfigError, InputError

#: Values of :attr:`Mixture.binding`: which constraint decides a source's weight.
EPOCH_CAP = "epoch_cap"  # the source is repeated exactly max_epochs times
BUDGET_SHARE = "budget_share"  # UniMax: the source got the equal share of the remaining budget
NONNEG = "nonneg"  # an optimiser drove the weight to zero
NONE = "none"  # no constraint is active (the weight is the method's free choice)
BINDINGS = (EPOCH_CAP, BUDGET_SHARE, NONNEG, NONE)

#: Relative tolerance for deciding that a source sits at its epoch cap.
CAP_RTOL = 1e-7
#: Weights below this are reported as pinned at zero by the non-negativity constraint (interior-point
#: solvers leave residues of ~1e-9 on sources they drop; 1e-6 of a budget is under one window at any
#: budget below 2e9 windows' tokens).
ZERO_WEIGHT = 1e-6
#: How many names an error message lists before it says "and N more".


@dataclass(frozen=True)
class SourceSize:
    """What a mixer needs to know about one source. Only ``n_tokens`` is used by the solvers."""

    n_tokens: float
    n_docs: int | None = None
    paths: tuple[str, ...] = ()


class SourceColumn(Mapping):
    """Read-only mapping source name -> value, stored as a list in source order.

    What :class:`Mixture` holds per source. Building a dict costs ~0.2-0.3 s per million sources
    (one random hash-table write per key); a column is a list (or a numpy array, turned into a list
    of Python scalars on first access), and the name -> position index that lookups by name need
    is built on the first such lookup and shared by every column of a mixture. Iteration, ``len``,
    ``items()`` and ``values()`` never need the index. Compares equal to any mapping with the same
    items, like a dict.
    """

    __slots__ = ("_names", "_values", "_index")

    def __init__(self, names: tuple[str, ...], values: Sequence[Any] | np.ndarray,
                 index: list[dict[str, int] | None] | None = None) -> None:
        if len(values) != len(names):
            raise ValueError(f"{len(values)} values for {len(names)} sources")
        self._names = names
        self._values = values if isinstance(values, np.ndarray) else list(values)
        self._index = [None] if index is None else index  # a shared, lazily filled box

    @classmethod
    def of(cls, mapping: Mapping[str, Any]) -> SourceColumn:
        """A column holding the items of ``mapping`` (a column is returned as is)."""
        if isinstance(mapping, SourceColumn):
            return mapping
        return cls(tuple(mapping), list(mapping.values()))

    def _list(self) -> list[Any]:
        if isinstance(self._values, np.ndarray):
            self._values = self._values.tolist()  # Python floats / str, never numpy scalars
        return self._values

    def _position(self) -> dict[str, int]:
        if self._index[0] is None:
            self._index[0] = dict(zip(self._names, range(len(self._names))))
        return self._index[0]

    def __getitem__(self, name: str) -> Any:
        return self._list()[self._position()[name]]

    def __contains__(self, name: object) -> bool:
        return name in self._position()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def items(self) -> ItemsView[str, Any]:
        return _ColumnItems(self)

    def values(self) -> ValuesView[Any]:
        return _ColumnValues(self)

    def __repr__(self) -> str:
        return repr(dict(zip(self._names, self._list())))

    def __reduce__(self):
        return (SourceColumn, (self._names, self._list()))


class _ColumnItems(ItemsView):
    def __iter__(self):
        return zip(self._mapping._names, self._mapping._list())


class _ColumnValues(ValuesView):
    def __iter__(self):
        return iter(self._mapping._list())


#: The per-source fields of a Mixture (held as SourceColumn s).
PER_SOURCE_FIELDS = ("n_tokens", "weights", "target_tokens", "epochs", "max_epochs", "binding",
                     "n_docs", "paths")


@dataclass(frozen=True)
class Mixture:
    """A solved mixture. Every mapping is keyed by source name, in the caller's source order; the
    per-source ones are read-only :class:`SourceColumn` s (any mapping passed in is converted).

    ``weights`` sum to 1; ``target_tokens = weight * budget_tokens``;
    ``epochs = target_tokens / n_tokens``; ``max_epochs`` holds each source's cap (None: no cap).
    ``method``/``params`` name the algorithm and every setting it used, defaults included;
    ``solver``/``status``/``objective`` say how the weights were found ("closed_form" solvers
    have ``objective`` None). ``n_docs``/``paths`` echo the inputs; ``utility`` holds the raw
    {benchmark: score} per source for the utility-based methods.
    """

    method: str
    params: Mapping[str, Any]
    budget_tokens: float
    n_tokens: Mapping[str, float]
    weights: Mapping[str, float]
    target_tokens: Mapping[str, float]
    epochs: Mapping[str, float]
    max_epochs: Mapping[str, float | None]
    binding: Mapping[str, str]
    solver: str = "closed_form"
    status: str = "optimal"
    objective: float | None = None
    n_docs: Mapping[str, int | None] = field(default_factory=dict)
    paths: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    utility: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("params", "utility"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        for name in PER_SOURCE_FIELDS:
            object.__setattr__(self, name, SourceColumn.of(getattr(self, name)))

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self.weights)


def fmt_tokens(x: float) -> str:
    """12,345,678 for integral token counts, 3 significant decimals otherwise."""
    if math.isfinite(x) and abs(x - round(x)) < 1e-6 * max(1.0, abs(x)):
        return f"{int(round(x)):,}"
    return f"{x:,.3f}"


def _n_tokens_of(name: str, spec: Any) -> tuple[Any, int | None, tuple[str, ...]]:
    if is_number(spec):
        return spec, None, ()
    if isinstance(spec, Mapping):
        if "n_tokens" not in spec:
            raise InputError(f"source {name!r} has no 'n_tokens'; give its token count "
                             f"(e.g. {{'n_tokens': 1000000}}) or run the count stage first")
        n_docs, paths = spec.get("n_docs"), spec.get("paths") or ()
        return spec["n_tokens"], n_docs, tuple(paths)
    if hasattr(spec, "n_tokens"):
        return spec.n_tokens, getattr(spec, "n_docs", None), tuple(getattr(spec, "paths", ()) or ())
    raise InputError(f"source {name!r}: expected a token count, a mapping with 'n_tokens' or an "
                     f"object with .n_tokens, got {type(spec).__name__}")


def coerce_sources(sources: Mapping[str, Any]) -> dict[str, SourceSize]:
    """Validate ``sources`` (name -> count | mapping | object with n_tokens) into SourceSize records.

    Raises InputError for an empty mapping, non-string names, and counts that are not finite,
    negative or zero; each message names the offending sources and the fix.
    """
    if not isinstance(sources, Mapping):
        raise InputError(f"sources must be a mapping name -> token count, got {type(sources).__name__}")
    if not sources:
        raise InputError("no sources given; add at least one source with its token count")
    out: dict[str, SourceSize] = {}
    bad_type, not_finite, negative, zero = [], [], [], []
    for name, spec in sources.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"source names must be non-empty strings, got {name!r}")
        n, n_docs, paths = _n_tokens_of(name, spec)
        if not is_number(n):
            bad_type.append(name)
            continue
        n = float(n)
        if not math.isfinite(n):
            not_finite.append(name)
        elif n < 0:
            negative.append(name)
        elif n == 0:
            zero.append(name)
        if n_docs is not None and (not is_number(n_docs) or n_docs < 0 or int(n_docs) != n_docs):
            raise InputError(f"source {name!r}: n_docs must be a non-negative integer, got {n_docs!r}")
        out[name] = SourceSize(n_tokens=n, n_docs=None if n_docs is None else int(n_docs),
                               paths=tuple(str(p) for p in paths))
    if bad_type:
        raise InputError(f"token counts of sources {name_list(bad_type)} are not numbers; "
                         "give each source an int or float token count")
    if not_finite:
        raise InputError(f"token counts of sources {name_list(not_finite)} are NaN or infinite; "
                         "re-run the count stage for them or fix their stats")
    if negative:
        raise InputError(f"token counts of sources {name_list(negative)} are negative; "
                         "re-run the count stage for them or fix their stats")
    if zero:
        raise InputError(f"sources {name_list(zero)} have 0 tokens, so no weight can be honoured; "
                         "remove them from the config or fix their paths (ingest found no text)")
    return out


#: Token-count types that :func:`source_columns` validates without a per-source Python call.
_PLAIN_COUNT_TYPES = frozenset({int, float, np.int64, np.int32, np.uint64, np.float64, np.float32})


def source_columns(sources: Mapping[str, Any]) -> tuple[tuple[str, ...], np.ndarray,
                                                        list[int | None], list[tuple[str, ...]]]:
    """``(names, n_tokens, n_docs, paths)`` of validated ``sources``, column-wise (source order).

    Same rules and messages as :func:`coerce_sources`; the common case of a plain mapping
    name -> number (e.g. 10^6 sources) is validated with numpy and builds no per-source records.
    Anything unusual, valid or not, goes through :func:`coerce_sources`.
    """
    if isinstance(sources, Mapping) and sources:
        values = list(sources.values())
        if (set(map(type, values)) <= _PLAIN_COUNT_TYPES and set(map(type, sources)) == {str}
                and "" not in sources):
            n_tokens = np.array(values, dtype=float)
            if np.all(np.isfinite(n_tokens)) and np.all(n_tokens > 0):
                names = tuple(sources)
                return names, n_tokens, [None] * len(names), [()] * len(names)
    records = coerce_sources(sources)
    return (tuple(records), np.array([r.n_tokens for r in records.values()], dtype=float),
            [r.n_docs for r in records.values()], [r.paths for r in records.values()])


def check_budget(budget_tokens: Any) -> float:
    """A finite, positive token budget as float, or ConfigError."""
    if not is_number(budget_tokens) or not math.isfinite(float(budget_tokens)) or budget_tokens <= 0:
        raise ConfigError(f"budget_tokens must be a finite number of tokens > 0, got {budget_tokens!r}; "
                          "set mix.budget_tokens, e.g. 2.0e9")
    return float(budget_tokens)


def resolve_max_epochs(max_epochs: float | Mapping[str, float] | None,
                       names: Sequence[str]) -> np.ndarray:
    """Per-source epoch caps as an array (inf where uncapped).

    ``max_epochs`` is None (no cap), one number for all sources, or a mapping name -> cap that
    must name every source (a cap of None in the mapping means uncapped).
    """
    def one(value: Any, where: str) -> float:
        if value is None:
            return math.inf
        if not is_number(value) or math.isnan(float(value)) or value <= 0:
            raise ConfigError(f"max_epochs{where} must be a number > 0 (or None for no cap), got {value!r}")
        return float(value)

    if isinstance(max_epochs, Mapping):
        missing = [n for n in names if n not in max_epochs]
        unknown = [n for n in max_epochs if n not in names]
        if missing:
            raise ConfigError(f"max_epochs gives no cap for sources {name_list(missing)}; "
                              "add them (None = uncapped) or give one number for all sources")
        if unknown:
            raise ConfigError(f"max_epochs names unknown sources {name_list(unknown)}; "
                              f"known sources are {name_list(list(names))}")
        return np.array([one(max_epochs[n], f"[{n!r}]") for n in names], dtype=float)
    return np.full(len(names), one(max_epochs, ""), dtype=float)


def caps_as_list(caps: np.ndarray) -> list[float | None]:
    """Per-source caps as floats, None for an uncapped (inf) source."""
    caps = np.asarray(caps, dtype=float)
    values = caps.tolist()
    if np.all(np.isfinite(caps)):
        return values
    return [None if math.isinf(c) else c for c in values]


def caps_as_dict(names: Sequence[str], caps: np.ndarray) -> dict[str, float | None]:
    """``{name: cap}`` with None for an uncapped (inf) source."""
    return dict(zip(names, caps_as_list(caps)))


def at_cap(weights: np.ndarray, weight_caps: np.ndarray) -> np.ndarray:
    """True where a weight sits at its cap (relative tolerance CAP_RTOL)."""
    finite = np.isfinite(weight_caps)
    out = np.zeros(len(weights), dtype=bool)
    out[finite] = weights[finite] >= weight_caps[finite] * (1 - CAP_RTOL) - 1e-15
    return out


def binding_labels(weights: np.ndarray, weight_caps: np.ndarray, free: str = NONE) -> list[str]:
    """Per source: EPOCH_CAP at the cap, NONNEG at zero, else ``free`` (the method's own label)."""
    return binding_array(weights, weight_caps, free).tolist()


def binding_array(weights: np.ndarray, weight_caps: np.ndarray, free: str = NONE) -> np.ndarray:
    """:func:`binding_labels` as a numpy object array (vectorised)."""
    capped = at_cap(weights, weight_caps)
    labels = np.where(capped, 0, np.where(np.asarray(weights) < ZERO_WEIGHT, 1, 2))
    return np.array((EPOCH_CAP, NONNEG, free), dtype=object)[labels]
