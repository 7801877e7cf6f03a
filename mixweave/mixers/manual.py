"""Manual mixing: weights the user chose, validated and normalised.

Algorithm: check every source has a finite, non-negative weight, that no unknown source is named
and that the weights do not all vanish; divide by their sum. Cost: O(k).
Trade-off: full control and no model; the caller's solve() still checks the epoch caps and says
which budget these weights allow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from mixweave.errors import ConfigError
from mixweave.mixers.mixture import is_number, name_list


def manual_weights(names: Sequence[str], weights: Mapping[str, float]) -> np.ndarray:
    """Validated weights in the order of ``names``, normalised to sum to 1."""
    if not isinstance(weights, Mapping) or not weights:
        raise ConfigError("method 'manual' needs weights={source: weight, ...} covering every source")
    missing = [n for n in names if n not in weights]
    unknown = [n for n in weights if n not in names]
    if missing:
        raise ConfigError(f"manual weights give no weight to sources {name_list(missing)}; "
                          "add them (0 leaves a source out)")
    if unknown:
        raise ConfigError(f"manual weights name unknown sources {name_list(unknown)}; "
                          f"known sources are {name_list(list(names))}")
    values = []
    bad = []
    for n in names:
        v = weights[n]
        if not is_number(v) or not math.isfinite(float(v)) or v < 0:
            bad.append(f"{n}={v!r}")
            values.append(0.0)
        else:
            values.append(float(v))
    if bad:
        raise ConfigError(f"manual weights must be finite numbers >= 0; fix {name_list(bad)}")
    w = np.array(values)
    total = w.sum()
    if total <= 0:
        raise ConfigError("manual weights are all zero; give at least one source a positive weight")
    return w / total
