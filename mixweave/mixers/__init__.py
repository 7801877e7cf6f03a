"""mixweave.mixers: mixture weights over sources under a token budget with epoch caps.

Light at import time: numpy only. cvxpy loads on the first UtiliMax / weakest-link solve, pandas on
the first DataFrame or file, matplotlib only in :mod:`mixweave.mixers.chart`.
"""

from mixweave.mixers.api import METHODS, mix_from_stats, solve, sources_from_stats
from mixweave.mixers.bts import BtsConfig, bts_mixtures, expert_weights, stitch_weights
from mixweave.mixers.mixture import BINDINGS, Mixture, SourceSize
from mixweave.mixers.phases import combine_phases, solve_phases
from mixweave.mixers.simulate import SimulatedSubset, simulate_data_constraints

__all__ = [
    "BINDINGS", "METHODS", "BtsConfig", "Mixture", "SimulatedSubset", "SourceSize", "bts_mixtures", "combine_phases",
    "expert_weights", "mix_from_stats", "simulate_data_constraints", "solve", "solve_phases", "sources_from_stats",
    "stitch_weights",
]
