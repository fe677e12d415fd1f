"""Finalize before saving: bake every weight transform, then remove heads and FFN neurons that do nothing.

The result is a plain compact model (no parametrizations, no auxiliary modules) that the standalone
modeling files load, with the logits of the model that went in. Removal is exact:

- a unit whose consumer columns are all zero contributes nothing;
- a neuron whose intermediate row is all zero outputs the constant act(b); a head whose value rows are
  all zero outputs its value bias (attention probabilities sum to 1). Their contribution through the
  consumer is a constant, folded into the consumer's bias before removal.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nlpcompress.parametrize import bake
from nlpcompress.pruning.units import HEADS, NEURONS, Item, Unit, remove_units


def finalize(model: nn.Module) -> dict[str, Any]:
    """Bake transforms and remove empty heads and neurons in place; returns what was done."""
    report: dict[str, Any] = {"baked_transforms": bake(model)}
    for unit in (HEADS, NEURONS):
        empty = fold_constant_units(model, unit)
        remove_units(model, unit, empty)
        report[f"removed_{unit.name}"] = len(empty)
    return report


@torch.no_grad()
def fold_constant_units(model: nn.Module, unit: Unit) -> list[Item]:
    """Units whose output is zero or constant, their constant folded into the consumer bias (weights baked)."""
    size = unit.group_size(model)
    value_producer = unit.producers[-1]  # value for heads, intermediate for neurons
    found = []
    for layer, block in enumerate(unit.blocks(model)):
        consumer, producer = getattr(block, unit.consumer), getattr(block, value_producer)
        for index in range(consumer.in_features // size):
            columns = slice(index * size, (index + 1) * size)
            if not consumer.weight[:, columns].any():
                found.append((layer, index))
            elif not producer.weight[columns].any():
                constant = (
                    producer.bias[columns] if unit is HEADS else block.activation(producer.bias[columns])
                )
                consumer.bias += consumer.weight[:, columns] @ constant
                found.append((layer, index))
    return found
