"""Structural units of the compact model, attention heads and FFN neurons: gates, importance, selection.

Units and their removal are the model's surgery (``nlpcompress.surgery``). A unit's gate ξ scales those consumer columns (a ``GroupGate``), which
is the head mask of Michel et al. (2019) §3 for heads and a neuron mask for the FFN.

A unit is named ``(layer, index)``, ``layer`` being a *unique* layer of the compact model (an index
into ``config.heads_per_layer`` / ``config.intermediate_sizes``). With layer sharing, one gate acts at
every depth that uses the layer, and the gradient score sums the sensitivities of all its uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from nlpcompress.distributed import all_reduce_sum
from nlpcompress.parametrize import GroupGate, attach, detach, transforms_of
from nlpcompress.surgery import Item, Unit, check_items

Importance = list[torch.Tensor]  # one 1-D float tensor per unique layer (layers may differ in size)


# ---------------------------------------------------------------- gates


def gates_for(counts: Sequence[int], off: Iterable[Item] = ()) -> list[torch.Tensor]:
    """Gates ξ: 1.0 for every unit, 0.0 for those in ``off`` (already checked)."""
    gates = [torch.ones(count) for count in counts]
    for layer, index in off:
        gates[layer][index] = 0.0
    return gates


def _unit_gates(model: nn.Module, unit: Unit) -> list[GroupGate | None]:
    """The unit's gate on each unique layer's consumer (None where there is none)."""
    found = []
    for linear in unit.consumers(model):
        chain = [t for t in transforms_of(linear) if isinstance(t, GroupGate) and t.unit == unit.name]
        found.append(chain[0] if chain else None)
    return found


def has_gates(model: nn.Module, unit: Unit) -> bool:
    return any(gate is not None for gate in _unit_gates(model, unit))


def set_gates(model: nn.Module, unit: Unit, gates: Sequence[torch.Tensor] | None) -> None:
    """Gate each unique layer's consumer with one value per unit (``None`` removes the unit's gates).

    Gates already attached are updated in place, so the model's state-dict keys stay the same (a
    checkpoint taken while gated loads back into a gated model).
    """
    if gates is None:
        detach(model, keep=lambda t: not (isinstance(t, GroupGate) and t.unit == unit.name))
        return
    counts = unit.counts(model)
    if len(gates) != len(counts) or any(len(g) != c for g, c in zip(gates, counts, strict=False)):
        raise ValueError(
            f"gates of sizes {[len(g) for g in gates]} do not fit {unit.name} per layer {counts}"
        )
    current = _unit_gates(model, unit)
    if all(gate is not None for gate in current):
        for gate, values in zip(current, gates, strict=True):
            gate.gate.copy_(values)
        return
    set_gates(model, unit, None)
    by_module = dict(zip(unit.consumers(model), gates, strict=True))
    size = unit.group_size(model)
    modules = dict(model.named_modules())
    attach(
        model, unit.consumer_pattern(), lambda name, _: GroupGate(by_module[modules[name]], size, unit.name)
    )


def restore_gates(model: nn.Module, unit: Unit, off: list[Item] | None) -> None:
    """Back to a state read with ``gated_off`` (``None``: there were no gates)."""
    if off is None:
        set_gates(model, unit, None)
    else:
        gate_units(model, unit, off)


def gate_units(model: nn.Module, unit: Unit, off: Iterable[Sequence[int]]) -> None:
    """Switch the units in ``off`` off (ξ = 0) and all others on (attaching gates if there are none)."""
    counts = unit.counts(model)
    set_gates(model, unit, gates_for(counts, check_items(unit, counts, off)))


def gated_off(model: nn.Module, unit: Unit) -> list[Item]:
    """The units whose gate is 0 now."""
    return [
        (layer, int(index))
        for layer, gate in enumerate(_unit_gates(model, unit))
        if gate is not None
        for index in torch.nonzero(gate.gate == 0).flatten()
    ]


# ---------------------------------------------------------------- importance


def gradient_importance(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    unit: Unit,
    off: Iterable[Sequence[int]] = (),
    progress: bool = False,
    total: int | None = None,
) -> Importance:
    """I = E_x |∂L(x)/∂ξ| for every unit's gate ξ at ξ = 1 (Michel et al. §4.1, Eqs. 2–3), model in eval mode.

    The gate scales consumer input columns, so per example ∂L(x)/∂ξ = Σ_{tokens, columns of the unit}
    a ⊙ (∂L/∂y · W), with ``a`` the consumer's input and ``y`` its output: read from forward hooks and
    one ``autograd.grad`` per batch, the absolute value is taken per example as in the paper (not per
    batch), so the score depends on neither batch size nor process count. Uses of a shared layer add up
    before the absolute value, as one gate multiplies them all. Units in ``off`` are gated off while
    scoring and score 0. Sums are all-reduced across processes. Parameter gradients stay untouched.
    """
    counts = unit.counts(model)
    off = check_items(unit, counts, off)
    size = unit.group_size(model)
    consumers = unit.consumers(model)
    layer_of = {id(linear): layer for layer, linear in enumerate(consumers)}
    device = next(model.parameters()).device
    previous = gated_off(model, unit) if has_gates(model, unit) else None
    sums = torch.zeros(sum(counts) + 1, dtype=torch.float64)  # every unit, then the example count
    was_training = model.training
    model.eval()
    gate_units(model, unit, off)  # attaching a gate keeps each consumer module (its class changes in place)
    try:
        for batch in tqdm(batches, total=total, desc=f"{unit.name} importance", disable=not progress):
            if "labels" not in batch:
                raise ValueError("gradient importance needs labelled batches (a 'labels' entry)")
            batch = {key: value.to(device) for key, value in batch.items()}
            sums[:-1] += _batch_sensitivity(model, consumers, layer_of, counts, size, batch)
            sums[-1] += batch["input_ids"].shape[0]
    finally:
        restore_gates(model, unit, previous)
        model.train(was_training)
    return mean_per_unit(sums, counts, off)


def mean_per_unit(sums: torch.Tensor, counts: list[int], off: list[Item]) -> Importance:
    """Per-unit sums, then the example count (this process's) -> the all-process mean per unit; ``off`` score 0."""
    sums = all_reduce_sum(sums)
    if sums[-1] == 0:
        raise ValueError("importance needs at least one example; the batches were empty")
    importance = list((sums[:-1] / sums[-1]).float().split(counts))
    for layer, index in off:
        importance[layer][index] = 0.0
    return importance


def _batch_sensitivity(
    model: nn.Module,
    consumers: list[nn.Linear],
    layer_of: dict[int, int],
    counts: list[int],
    size: int,
    batch: Mapping[str, torch.Tensor],
) -> torch.Tensor:
    """Σ_x |∂L(x)/∂ξ| over the batch, one entry per unit."""
    examples = batch["input_ids"].shape[0]
    captured: list[tuple[nn.Linear, torch.Tensor, torch.Tensor]] = []

    def capture(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        captured.append((module, args[0], output))

    hooks = [linear.register_forward_hook(capture) for linear in consumers]
    try:
        with torch.enable_grad():
            loss = model(**batch).loss * examples  # mean loss × batch size = Σ_x L(x)
            used = [(linear, a, y) for linear, a, y in captured if a.shape[-1] > 0]
            grads = torch.autograd.grad(loss, [y for _, _, y in used], allow_unused=True) if used else []
    finally:
        for hook in hooks:
            hook.remove()
    per_example = [torch.zeros(examples, count, dtype=torch.float64) for count in counts]
    for (linear, inputs, _), grad in zip(used, grads, strict=True):
        if grad is None:
            continue
        layer = layer_of[id(linear)]
        with torch.no_grad():
            contribution = inputs * (grad @ linear.weight)  # (batch, tokens, columns)
            per_example[layer] += (
                contribution.reshape(examples, -1, counts[layer], size).sum((1, 3)).double().cpu()
            )
    return torch.cat([values.abs().sum(0) for values in per_example])


def normalize_per_layer(importance: Importance) -> Importance:
    """Each layer's scores divided by their L2 norm (layers scoring all zero stay zero)."""
    return [scores / scores.norm() if scores.norm() > 0 else scores.clone() for scores in importance]


def random_importance(counts: Sequence[int], seed: int) -> Importance:
    """Uniform random scores: the random-pruning baseline under the same selection rules and budget."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(count, generator=generator) for count in counts]


# ---------------------------------------------------------------- selection


def prunable_count(counts: Sequence[int], min_keep: int, off: Iterable[Item] = ()) -> int:
    """How many more units may go while every layer keeps ``min_keep`` (or all it has, if fewer)."""
    left = list(counts)
    for layer, _ in off:
        left[layer] -= 1
    return sum(max(0, alive - min_keep) for alive in left)


def select_least_important(
    importance: Importance, count: int, exclude: Iterable[Sequence[int]] = (), min_keep: int = 1
) -> list[Item]:
    """The ``count`` least important units, ranked globally across layers (Michel et al. §4.2).

    Units in ``exclude`` (already pruned) are skipped; a layer never drops below ``min_keep`` live
    units (``0`` allows empty layers). Ties break by ``(layer, index)``, so the choice is deterministic.
    """
    counts = [len(scores) for scores in importance]
    excluded = {(int(layer), int(index)) for layer, index in exclude}
    if count < 0:
        raise ValueError(f"cannot prune a negative number of units ({count})")
    possible = prunable_count(counts, min_keep, excluded)
    if count > possible:
        raise ValueError(
            f"cannot prune {count} more units while every layer keeps at least {min_keep}: "
            f"at most {possible} can go (allow empty layers or lower the target)"
        )
    alive = [n - sum(1 for layer, _ in excluded if layer == i) for i, n in enumerate(counts)]
    ranked = sorted(
        (float(scores[index]), layer, index)
        for layer, scores in enumerate(importance)
        for index in range(len(scores))
        if (layer, index) not in excluded
    )
    chosen: list[Item] = []
    for _, layer, index in ranked:
        if len(chosen) == count:
            break
        if alive[layer] > min_keep:
            chosen.append((layer, index))
            alive[layer] -= 1
    return sorted(chosen)


def step_size(alive: int, left_to_prune: int, step_fraction: float) -> int:
    """Units to prune in one iterative step: ``step_fraction`` of the live ones, at least 1, at most what is left."""
    return min(left_to_prune, max(1, round(step_fraction * alive)))


def iterative_steps(total: int, count: int, step_fraction: float) -> int:
    """How many iterative steps reach ``count`` pruned units out of ``total``."""
    steps = pruned = 0
    while pruned < count:
        pruned += step_size(total - pruned, count - pruned, step_fraction)
        steps += 1
    return steps
