"""Attention-head pruning after Michel, Levy & Neubig (2019), "Are Sixteen Heads Really Better than One?".

The head-specific parts on top of the unit core (``units.py``: gates, gradient importance, selection,
removal): the two importance scores and the heat map. The Trainer face is ``head_callback.py``, the
recipe stage ``nlpcompress/stages/prune_heads.py``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from nlpcompress.pruning.units import (
    Importance,
    gate_units,
    gated_off,
    gradient_importance,
    has_gates,
    mean_per_unit,
    normalize_per_layer,
    restore_gates,
)
from nlpcompress.surgery import HEADS, check_items

logger = logging.getLogger(__name__)

SCORES = ("gradient", "entropy")


def head_importance(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    score: str = "gradient",
    normalize: bool = True,
    pruned: Iterable[Sequence[int]] = (),
    progress: bool = False,
    total: int | None = None,
) -> Importance:
    """Importance of every head over labelled ``batches`` (the model is scored in eval mode).

    ``gradient``: Michel et al. §4.1, Eqs. 2–3: I_h = E_x |∂L(x)/∂ξ_h| (``units.gradient_importance``).
    ``entropy``: attention concentration E_x mean_q [log n − H(p_q)], the KL divergence of each
    query's attention distribution from uniform over the n real tokens; near-uniform heads score low.
    ``normalize`` divides each layer's scores by their L2 norm, as the authors' released code does
    before ranking heads across layers. Heads in ``pruned`` are gated off while scoring and score 0.
    """
    if score not in SCORES:
        raise ValueError(f"unknown importance score {score!r}; allowed: {', '.join(SCORES)}")
    if score == "gradient":
        importance = gradient_importance(model, batches, HEADS, pruned, progress, total)
    else:
        importance = entropy_importance(model, batches, pruned, progress, total)
    return normalize_per_layer(importance) if normalize else importance


def entropy_importance(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    pruned: Iterable[Sequence[int]] = (),
    progress: bool = False,
    total: int | None = None,
) -> Importance:
    """E_x mean over real query tokens of (log n − H(attention row)) per head, all-reduced across processes.

    With layer sharing, a head's score averages over the depths that use its layer.
    """
    counts = HEADS.counts(model)
    pruned = check_items(HEADS, counts, pruned)
    previous = gated_off(model, HEADS) if has_gates(model, HEADS) else None
    sums = torch.zeros(sum(counts) + 1, dtype=torch.float64)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    gate_units(model, HEADS, pruned)
    try:
        for batch in tqdm(batches, total=total, desc="heads importance (entropy)", disable=not progress):
            batch = {key: value.to(device) for key, value in batch.items()}
            sums[:-1] += _entropy_sums(model, counts, batch)
            sums[-1] += batch["input_ids"].shape[0]
    finally:
        restore_gates(model, HEADS, previous)
        model.train(was_training)
    return mean_per_unit(sums, counts, pruned)


@torch.no_grad()
def _entropy_sums(model: nn.Module, counts: list[int], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Σ_x mean over real query tokens of (log n − H(attention row)), one entry per head."""
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    attentions = model(**inputs, output_attentions=True).attentions
    mask = batch.get("attention_mask")
    valid = torch.ones_like(batch["input_ids"]) if mask is None else mask
    valid = valid.to(torch.float64)
    tokens = valid.sum(-1)  # n per example
    layer_map = model.config.layer_map
    uses = [layer_map.count(layer) for layer in range(len(counts))]
    sums = [torch.zeros(count, dtype=torch.float64) for count in counts]
    for depth, probs in enumerate(attentions):
        if probs is None:  # a layer without heads
            continue
        layer = layer_map[depth]
        probs = probs.double()
        entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1)  # (batch, heads, queries)
        concentration = tokens.log()[:, None, None] - entropy
        per_example = (concentration * valid[:, None, :]).sum(-1) / tokens[:, None]
        sums[layer] += per_example.sum(0).cpu() / uses[layer]
    return torch.cat(sums)


# ---------------------------------------------------------------- heat map


def plot_head_importance(
    importance: Importance, pruned: Iterable[Sequence[int]], path: str | Path, title: str = ""
) -> Path | None:
    """Save a layers × heads heat map of ``importance`` with pruned heads marked ✕ (matplotlib, Agg).

    Returns the path, or None (with a logged note) when matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning(
            "matplotlib is not installed; skipping the head-importance heat map (pip install matplotlib)"
        )
        return None
    width = max((len(scores) for scores in importance), default=0)
    grid = torch.full((len(importance), max(width, 1)), math.nan)
    for layer, scores in enumerate(importance):
        grid[layer, : len(scores)] = scores.float()
    figure = Figure(figsize=(1.0 + 0.45 * max(width, 1), 1.2 + 0.45 * len(importance)))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    image = axes.imshow(grid.numpy(), cmap="viridis", aspect="auto")
    for layer, head in pruned:
        axes.text(head, layer, "✕", ha="center", va="center", color="red", fontsize=11)
    axes.set_xlabel("head")
    axes.set_ylabel("layer (unique)")
    axes.set_xticks(range(width))
    axes.set_yticks(range(len(importance)))
    axes.set_title(title or "head importance (✕ = pruned)")
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    return path
