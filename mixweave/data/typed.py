"""Typed settings from plain mappings: the machinery every component's config uses.

Each component defines a frozen, keyword-only dataclass next to its code (``Literal`` choices,
checks in ``__post_init__``, nested typed parameters); :func:`from_dict` builds one from a YAML
mapping and names the dotted key of any problem (unknown key, missing key, wrong type, value not
among the choices). :func:`to_plain` turns dataclasses back into JSON-ready values for manifests.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError

#: names listed in one error message before "and N more"
MAX_NAMES_IN_MESSAGE = 8


def name_list(names: Sequence[str]) -> str:
    """'a, b, c' or 'a, b, ... and 12 more' for error messages."""
    names = list(names)
    if len(names) <= MAX_NAMES_IN_MESSAGE:
        return ", ".join(names)
    return ", ".join(names[:MAX_NAMES_IN_MESSAGE]) + f" and {len(names) - MAX_NAMES_IN_MESSAGE} more"


def is_number(x: Any) -> bool:
    """A real number that is not a bool (numpy scalars included)."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


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
