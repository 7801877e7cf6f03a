"""PNG chart of a mixture manifest: weights next to natural token shares, epochs against the cap.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend switch), so it is
safe in headless jobs and never changes the backend of a caller's session.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def plot_mixture(manifest: Mapping[str, Any], path: str | os.PathLike[str], *, dpi: int = 120) -> Path:
    """Write a two-panel PNG: (left) weight vs natural share per source, (right) epochs per source
    with each source's epoch cap marked. Returns the path written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sources = manifest["sources"]
    names = [s["name"] for s in sources]
    n_tokens = np.array([s["n_tokens"] for s in sources], dtype=float)
    weights = np.array([s["weight"] for s in sources], dtype=float)
    epochs = np.array([s["epochs"] for s in sources], dtype=float)
    caps = [s["max_epochs"] for s in sources]
    natural = n_tokens / n_tokens.sum()
    y = np.arange(len(names))
    height = max(3.0, 0.32 * len(names) + 1.5)

    fig = Figure(figsize=(11, height))
    FigureCanvasAgg(fig)
    # fixed margins in inches (the y labels' room from the longest name at ~0.075 in a character):
    # matplotlib's constrained layout measures every text with an extra draw, half of a chart's ~0.2 CPU-s
    label_in = 0.3 + 0.075 * max((len(n) for n in names), default=1)
    fig.subplots_adjust(left=min(0.5, label_in / 11), right=0.98, bottom=0.65 / height, top=1 - 0.75 / height,
                        wspace=0.06)
    left, right = fig.subplots(1, 2, sharey=True)
    bar = 0.4
    left.barh(y - bar / 2, natural, height=bar, color="#bbbbbb", label="natural token share")
    left.barh(y + bar / 2, weights, height=bar, color="#1f77b4", label="mixture weight")
    left.set_yticks(y, names)
    left.invert_yaxis()
    left.set_xlabel("share of tokens")
    left.legend(loc="lower right", fontsize="small")
    left.set_title("weights vs natural shares")

    colors = ["#d62728" if s["binding"] == "epoch_cap" else "#2ca02c" for s in sources]
    right.barh(y, epochs, height=0.6, color=colors)
    for yi, cap in zip(y, caps):
        if cap is not None and math.isfinite(cap):
            right.plot([cap, cap], [yi - 0.4, yi + 0.4], color="black", linewidth=2)
    right.set_xlabel("epochs (black tick: max_epochs; red: at the cap)")
    right.set_title("epochs per source")

    method = manifest.get("method", {}).get("name", "?")
    budget = manifest.get("budget_tokens", float("nan"))
    fig.suptitle(f"{method}: {budget:,.0f} tokens over {len(names)} sources")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path
