"""Attention-head pruning after Michel, Levy & Neubig (2019), "Are Sixteen Heads Really Better than One?".

The pure core: head gates, importance scores, head selection (one-shot, iterative, random) and the
physical removal of heads from the compact model. The Trainer face is ``head_callback.py``, the
recipe stage ``nlpcompress/stages/prune_heads.py``.

A head is named ``(layer, head)``, ``layer`` being a *unique* layer of the compact model (an index
into ``config.heads_per_layer``). With layer sharing (repeats in ``config.layer_map``) one gate
multiplies that layer's heads at every depth that uses it, so importance is per unique layer: the
gradient score sums the sensitivities of all its uses, the entropy score averages over them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from nlpcompress.compact import CompactSelfAttention

logger = logging.getLogger(__name__)

Head = tuple[int, int]
Importance = list[torch.Tensor]  # one 1-D float tensor per unique layer (layers may differ in size)
SCORES = ("gradient", "entropy")


# ---------------------------------------------------------------- heads and gates


def attention_modules(model: nn.Module) -> list[CompactSelfAttention]:
    """The self-attention block of every unique layer of a compact model (base or classifier)."""
    return [layer.attention for layer in model.base_model.encoder.layers]


def head_counts(model: nn.Module) -> list[int]:
    """Heads per unique layer, as the modules hold them (equal to ``config.heads_per_layer``)."""
    return [module.num_heads for module in attention_modules(model)]


def check_heads(counts: Sequence[int], heads: Iterable[Sequence[int]]) -> list[Head]:
    """``heads`` as sorted unique ``(layer, head)`` tuples; ValueError naming the valid range otherwise."""
    checked = set()
    for item in heads:
        layer, head = (int(index) for index in item)
        if not 0 <= layer < len(counts):
            raise ValueError(
                f"layer index {layer} is out of range: the model has {len(counts)} unique layers "
                f"(0..{len(counts) - 1})"
            )
        if not 0 <= head < counts[layer]:
            raise ValueError(
                f"head index {head} is out of range for layer {layer}, which has {counts[layer]} heads"
            )
        checked.add((layer, head))
    return sorted(checked)


def gates_for(counts: Sequence[int], pruned: Iterable[Sequence[int]] = ()) -> list[torch.Tensor]:
    """Gates ξ (Michel et al. §3): 1.0 for every head, 0.0 for the ``pruned`` ones."""
    gates = [torch.ones(count) for count in counts]
    for layer, head in check_heads(counts, pruned):
        gates[layer][head] = 0.0
    return gates


def set_head_gates(model: nn.Module, gates: Sequence[torch.Tensor | None] | None) -> None:
    """Attach one gate tensor per unique layer (``None`` detaches them all). Gates are never trained or saved."""
    modules = attention_modules(model)
    if gates is None:
        gates = [None] * len(modules)
    if len(gates) != len(modules):
        raise ValueError(f"{len(gates)} gates given; the model has {len(modules)} unique layers")
    for module, gate in zip(modules, gates, strict=True):
        module.head_gate = None if gate is None else gate.to(module.query.weight.device)


def gate_heads(model: nn.Module, pruned: Iterable[Sequence[int]]) -> None:
    """Switch the ``pruned`` heads off (ξ = 0) and all others on; no gates at all when none is pruned."""
    pruned = list(pruned)
    set_head_gates(model, gates_for(head_counts(model), pruned) if pruned else None)


# ---------------------------------------------------------------- importance


def distributed_shard() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` unless torch.distributed is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes (accelerate launch / torchrun), so every rank takes the same decision."""
    if distributed_shard()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def dataset_batches(
    dataset: Sequence[Mapping],
    collate_fn: Callable[[list], Mapping[str, torch.Tensor]],
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    limit: int | None = None,
) -> Iterator[Mapping[str, torch.Tensor]]:
    """Batches of this rank's share (rows ``rank, rank + world_size, ...``) of the first ``limit`` rows.

    Indexing rows directly (no DataLoader) draws nothing from the random generators, so scoring in
    the middle of training leaves the training order and dropout untouched.
    """
    end = len(dataset) if limit is None else min(limit, len(dataset))
    rows = range(rank, end, world_size)
    for start in range(0, len(rows), batch_size):
        yield collate_fn([dataset[index] for index in rows[start : start + batch_size]])


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

    ``gradient``: Michel et al. §4.1, Eqs. 2–3: I_h = E_x |∂L(x)/∂ξ_h|, the expected sensitivity of the
    task loss (true labels) to the head gate ξ_h at ξ = 1. Every example gets its own gates (a
    ``(batch, heads)`` gate), so the absolute value is taken per example as in the paper — not per batch as
    in the authors' code — and the score does not depend on batch size or process count.
    ``entropy``: attention concentration E_x mean_q [log n − H(p_q)], the KL divergence of each
    query's attention distribution from uniform over the n real tokens; near-uniform heads score low.

    ``normalize`` divides each layer's scores by their L2 norm, as the authors' released code does
    before ranking heads across layers. Heads in ``pruned`` are gated off while
    scoring and score 0. Sums are all-reduced across processes when torch.distributed is initialised,
    so N processes, each given a different share of the data, return what one process returns on all
    of it.
    """
    if score not in SCORES:
        raise ValueError(f"unknown importance score {score!r}; allowed: {', '.join(SCORES)}")
    modules = attention_modules(model)
    counts = [module.num_heads for module in modules]
    pruned = check_heads(counts, pruned)
    base_gates = gates_for(counts, pruned)
    sums = torch.zeros(sum(counts) + 1, dtype=torch.float64)  # every head, then the example count
    saved_gates = [module.head_gate for module in modules]
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    for p in params:  # gradients flow to the gates only; parameter .grad stays untouched
        p.requires_grad_(False)
    set_head_gates(model, base_gates)
    try:
        for batch in tqdm(batches, total=total, desc=f"Head importance ({score})", disable=not progress):
            if "labels" not in batch:
                raise ValueError("head importance needs labelled batches (a 'labels' entry)")
            batch = {key: value.to(modules[0].query.weight.device) for key, value in batch.items()}
            if score == "gradient":
                per_head = _gradient_sums(model, modules, batch, base_gates)
            else:
                per_head = _entropy_sums(model, counts, batch)
            sums[:-1] += per_head
            sums[-1] += batch["input_ids"].shape[0]
    finally:
        for p in params:
            p.requires_grad_(True)
        for module, gate in zip(modules, saved_gates, strict=True):
            module.head_gate = gate
        model.train(was_training)
    sums = _all_reduce_sum(sums)
    if sums[-1] == 0:
        raise ValueError("head importance needs at least one example; the batches were empty")
    importance = list((sums[:-1] / sums[-1]).float().split(counts))
    for layer, head in pruned:
        importance[layer][head] = 0.0
    return normalize_per_layer(importance) if normalize else importance


def _gradient_sums(
    model: nn.Module,
    modules: list[CompactSelfAttention],
    batch: Mapping[str, torch.Tensor],
    base_gates: list[torch.Tensor],
) -> torch.Tensor:
    """Σ_x |∂L(x)/∂ξ_h| over the batch, one entry per head (layers without heads contribute nothing)."""
    size = batch["input_ids"].shape[0]
    device = modules[0].query.weight.device
    gates = [gate.to(device).expand(size, -1).clone().requires_grad_(True) for gate in base_gates]
    for module, gate in zip(modules, gates, strict=True):
        module.head_gate = gate
    live = [gate for gate in gates if gate.shape[1] > 0]
    if not live:
        return torch.zeros(0, dtype=torch.float64)
    with torch.enable_grad():
        loss = model(**batch).loss * size  # mean loss × batch size = Σ_x L(x)
        grads = iter(torch.autograd.grad(loss, live))
    return (
        torch.cat([next(grads).abs().sum(0) if gate.shape[1] > 0 else gate.new_zeros(0) for gate in gates])
        .double()
        .cpu()
    )


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


def normalize_per_layer(importance: Importance) -> Importance:
    """Each layer's scores divided by their L2 norm (layers scoring all zero stay zero)."""
    return [scores / scores.norm() if scores.norm() > 0 else scores.clone() for scores in importance]


def random_importance(counts: Sequence[int], seed: int) -> Importance:
    """Uniform random scores: the random-pruning baseline under the same selection rules and budget."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(count, generator=generator) for count in counts]


# ---------------------------------------------------------------- selection


def target_count(target: float | int, total: int) -> int:
    """How many heads to prune: a fraction in (0, 1) of ``total`` (rounded), or a count (an int)."""
    if isinstance(target, bool) or not isinstance(target, int | float):
        raise ValueError(f"target must be a fraction in (0, 1) or a whole number of heads; got {target!r}")
    if isinstance(target, int):
        if target < 0:
            raise ValueError(f"target count {target} is negative; give a number of heads from 0 to {total}")
        if target > total:
            raise ValueError(f"target count {target} exceeds the {total} heads of the model")
        return target
    if not 0 < target < 1:
        raise ValueError(f"target fraction {target} must be in (0, 1); give an integer for a number of heads")
    return round(target * total)


def prunable_count(counts: Sequence[int], min_keep: int, pruned: Iterable[Sequence[int]] = ()) -> int:
    """How many more heads may go while every layer keeps ``min_keep`` (or all it has, if fewer)."""
    left = list(counts)
    for layer, _ in check_heads(counts, pruned):
        left[layer] -= 1
    return sum(max(0, alive - min_keep) for alive in left)


def select_heads(
    importance: Importance,
    count: int,
    exclude: Iterable[Sequence[int]] = (),
    min_keep: int = 1,
) -> list[Head]:
    """The ``count`` least important heads, ranked globally across layers (Michel et al. §4.2).

    Heads in ``exclude`` (already pruned) are skipped; a layer never drops below ``min_keep`` live
    heads (``0`` allows empty layers). Ties break by ``(layer, head)``, so the choice is deterministic.
    """
    counts = [len(scores) for scores in importance]
    excluded = set(check_heads(counts, exclude))
    if count < 0:
        raise ValueError(f"cannot prune a negative number of heads ({count})")
    possible = prunable_count(counts, min_keep, excluded)
    if count > possible:
        raise ValueError(
            f"cannot prune {count} more heads while every layer keeps at least {min_keep}: "
            f"at most {possible} can go (allow empty layers or lower the target)"
        )
    alive = [
        count_ - sum(1 for layer, _ in excluded if layer == index) for index, count_ in enumerate(counts)
    ]
    ranked = sorted(
        (float(scores[head]), layer, head)
        for layer, scores in enumerate(importance)
        for head in range(len(scores))
        if (layer, head) not in excluded
    )
    chosen: list[Head] = []
    for _, layer, head in ranked:
        if len(chosen) == count:
            break
        if alive[layer] > min_keep:
            chosen.append((layer, head))
            alive[layer] -= 1
    return sorted(chosen)


def step_size(alive: int, left_to_prune: int, step_fraction: float) -> int:
    """Heads pruned by one iterative step: ``step_fraction`` of the live heads, at least 1, at most what is left."""
    return min(left_to_prune, max(1, round(step_fraction * alive)))


def iterative_steps(total: int, count: int, step_fraction: float) -> int:
    """How many iterative steps reach ``count`` pruned heads out of ``total``."""
    steps = pruned = 0
    while pruned < count:
        pruned += step_size(total - pruned, count - pruned, step_fraction)
        steps += 1
    return steps


@dataclass
class IterativeResult:
    pruned: list[Head]
    first_importance: Importance  # the scores of the unpruned model (for the heat map)
    history: list[dict[str, float]] = field(default_factory=list)  # {"pruned": n, "metric": value}
    stopped_by_floor: bool = False


def iterative_prune(
    model: nn.Module,
    score_fn: Callable[[list[Head]], Importance],
    metric_fn: Callable[[], float],
    count: int,
    step_fraction: float,
    min_keep: int = 1,
    metric_floor: float | None = None,
) -> IterativeResult:
    """Prune ``step_fraction`` of the live heads, re-score, repeat (Michel et al. §4.2), with gates.

    Stops at ``count`` pruned heads, or when the metric of a step falls below ``metric_floor`` × the
    unpruned metric; that step is undone. The model is left gated with the result's ``pruned`` heads.
    """
    total = sum(head_counts(model))
    reference = metric_fn()
    result = IterativeResult(pruned=[], first_importance=[], history=[{"pruned": 0, "metric": reference}])
    while len(result.pruned) < count:
        importance = score_fn(result.pruned)
        if not result.first_importance:
            result.first_importance = importance
        size = step_size(total - len(result.pruned), count - len(result.pruned), step_fraction)
        step = select_heads(importance, size, exclude=result.pruned, min_keep=min_keep)
        gate_heads(model, result.pruned + step)
        metric = metric_fn()
        if metric_floor is not None and metric < metric_floor * reference:
            logger.info(
                "metric %.4f fell below %.2f × %.4f; undoing the last step", metric, metric_floor, reference
            )
            gate_heads(model, result.pruned)
            result.stopped_by_floor = True
            break
        result.pruned = sorted(result.pruned + step)
        result.history.append({"pruned": len(result.pruned), "metric": metric})
    return result


# ---------------------------------------------------------------- removal


def _slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping rows (``dim=0``) or input columns (``dim=1``) ``index`` of ``linear``."""
    if parametrize.is_parametrized(linear):
        raise ValueError(
            "cannot remove heads from a Linear with parametrizations (masks or quantizers); bake them first"
        )
    weight = linear.weight.detach().index_select(dim, index.to(linear.weight.device))
    new = nn.utils.skip_init(
        nn.Linear,
        weight.shape[1],
        weight.shape[0],
        bias=linear.bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(weight)
        if linear.bias is not None:
            bias = linear.bias.detach()
            new.bias.copy_(bias.index_select(0, index.to(bias.device)) if dim == 0 else bias)
    new.weight.requires_grad_(linear.weight.requires_grad)
    new.train(linear.training)
    return new


def _keep_heads(module: CompactSelfAttention, keep: list[int]) -> None:
    size = module.head_size
    index = torch.cat([torch.arange(head * size, (head + 1) * size) for head in keep] or [torch.zeros(0)])
    index = index.long()
    module.query = _slice_linear(module.query, index, 0)
    module.key = _slice_linear(module.key, index, 0)
    module.value = _slice_linear(module.value, index, 0)
    module.output = _slice_linear(module.output, index, 1)
    if module.head_gate is not None:
        module.head_gate = module.head_gate[..., keep]
    module.num_heads = len(keep)


def remove_heads(model: nn.Module, heads: Iterable[Sequence[int]]) -> nn.Module:
    """Physically remove ``heads`` from Q, K, V and the output projection; returns the model, edited.

    Layers may end with different head counts, or none (the layer then skips attention and adds
    only the output bias). ``config.heads_per_layer`` is updated, so ``save_pretrained`` writes a
    smaller model that the Auto classes reload. The logits equal those of the gated model with the
    removed heads' gates at 0. Head indices are those of the model *before* removal.
    """
    modules = attention_modules(model)
    heads = check_heads([module.num_heads for module in modules], heads)
    new_counts = list(model.config.heads_per_layer)
    for layer, module in enumerate(modules):
        drop = {head for layer_, head in heads if layer_ == layer}
        if drop:
            _keep_heads(module, [head for head in range(module.num_heads) if head not in drop])
            new_counts[layer] = module.num_heads
    model.config.heads_per_layer = new_counts
    return model


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
