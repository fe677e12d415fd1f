"""Structured pruning: attention heads (Michel et al. 2019) and FFN neurons, removed for real from the compact model.

``units`` is the core shared by heads and neurons (gates, gradient importance, selection; removal is
``nlpcompress.surgery``),
``heads`` the head-specific scores and heat map, ``iterative`` the one iterative loop, ``config`` the
typed settings, ``head_callback`` the Trainer face.
"""

from nlpcompress.pruning.config import HeadPruningConfig
from nlpcompress.pruning.head_callback import HeadPruningCallback
from nlpcompress.pruning.heads import SCORES, entropy_importance, head_importance, plot_head_importance
from nlpcompress.pruning.iterative import IterativePruning, iterative_prune
from nlpcompress.pruning.units import (
    Importance,
    gate_units,
    gated_off,
    gates_for,
    gradient_importance,
    iterative_steps,
    normalize_per_layer,
    random_importance,
    select_least_important,
    set_gates,
)
from nlpcompress.surgery import HEADS, NEURONS, Item, Unit, remove_units

__all__ = [
    "HEADS",
    "NEURONS",
    "SCORES",
    "HeadPruningCallback",
    "HeadPruningConfig",
    "Importance",
    "Item",
    "IterativePruning",
    "Unit",
    "entropy_importance",
    "gate_units",
    "gated_off",
    "gates_for",
    "gradient_importance",
    "head_importance",
    "iterative_prune",
    "iterative_steps",
    "normalize_per_layer",
    "plot_head_importance",
    "random_importance",
    "remove_units",
    "select_least_important",
    "set_gates",
]
