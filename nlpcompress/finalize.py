"""Finalize before saving: bake every weight transform, remove heads and FFN neurons that do nothing,
store sparse linears compressed.

The result is a plain compact model (no parametrizations, no auxiliary modules) that the standalone
modeling files load, with the logits of the model that went in. Removal is exact:

- a unit whose consumer columns are all zero contributes nothing;
- a neuron whose intermediate row is all zero outputs the constant act(b); a head whose value rows are
  all zero outputs its value bias (attention probabilities sum to 1). Their contribution through the
  consumer is a constant, folded into the consumer's bias before removal.

A linear whose bitmask plus non-zero values take at most ``SPARSE_STORAGE_RATIO`` of its dense bytes
becomes a ``SparseLinear`` (listed in ``config.sparse_weights``): the file shrinks with the density.
``densify`` turns such a model back into dense linears with fixed masks, for further compression.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nlpcompress.compact.modeling_compact_bert import SparseLinear
from nlpcompress.parametrize import Mask, bake
from nlpcompress.pruning.units import HEADS, NEURONS, Item, Unit, remove_units

SPARSE_STORAGE_RATIO = 0.9
_LINEARS = (("attention", ("query", "key", "value", "output")), ("ffn", ("intermediate", "output")))


def finalize(model: nn.Module) -> dict[str, Any]:
    """Bake transforms, remove empty heads and neurons, store sparse linears compressed; returns what was done."""
    report: dict[str, Any] = {"baked_transforms": bake(model)}
    if not model.config.quantized_weights:  # packed integer linears are final: their units stay
        report |= remove_dead_units(model)
    report["sparse_linears"] = store_sparse(model)
    return report


def remove_dead_units(model: nn.Module) -> dict[str, int]:
    """Remove the heads and FFN neurons whose output is zero or constant (folded first); how many of each."""
    report = {}
    for unit in (HEADS, NEURONS):
        empty = fold_constant_units(model, unit)
        remove_units(model, unit, empty)
        report[f"removed_{unit.name}"] = len(empty)
    return report


def encoder_linears(model: nn.Module):
    """(config name, block, attribute) of every encoder linear of every unique layer (a borrowed block once,
    at its owner)."""
    for index, layer in enumerate(model.base_model.encoder.layers):
        for block_name, names in _LINEARS:
            block = getattr(layer, block_name)
            for name in names if block is not None else ():  # a borrowed block is its owner's
                yield f"layers.{index}.{block_name}.{name}", block, name


def _pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A flat boolean tensor as bytes, bit i of byte j holding element 8·j + i (as SparseLinear unpacks)."""
    flat = mask.flatten()
    padded = torch.zeros((flat.numel() + 7) // 8 * 8, dtype=torch.uint8, device=flat.device)
    padded[: flat.numel()] = flat.to(torch.uint8)
    shifts = torch.arange(8, device=flat.device, dtype=torch.uint8)
    return (padded.view(-1, 8) << shifts).sum(1, dtype=torch.uint8)


@torch.no_grad()
def store_sparse(model: nn.Module) -> int:
    """Replace dense encoder linears that are sparse enough by ``SparseLinear``; returns how many."""
    stored = 0
    for name, block, attribute in encoder_linears(model):
        linear = getattr(block, attribute)
        if not isinstance(linear, nn.Linear) or linear.weight.numel() == 0:
            continue
        weight = linear.weight
        mask = weight != 0
        nonzeros = int(mask.sum())
        dense_bytes = weight.numel() * weight.element_size()
        if nonzeros * weight.element_size() + (weight.numel() + 7) // 8 > SPARSE_STORAGE_RATIO * dense_bytes:
            continue
        sparse = SparseLinear(linear.in_features, linear.out_features, nonzeros).to(
            weight.device, weight.dtype
        )
        sparse.values.copy_(weight[mask])
        sparse.bias.copy_(linear.bias)
        sparse.bitmask.copy_(_pack_bits(mask))
        sparse.train(linear.training)
        setattr(block, attribute, sparse)
        model.config.sparse_weights[name] = nonzeros
        stored += 1
    return stored


@torch.no_grad()
def densify(model: nn.Module) -> int:
    """Sparse-stored linears back to dense ones, each with a fixed ``Mask`` so pruned weights stay zero."""
    restored = 0
    for name, block, attribute in encoder_linears(model):
        sparse = getattr(block, attribute)
        if not isinstance(sparse, SparseLinear):
            continue
        linear = nn.Linear(sparse.in_features, sparse.out_features).to(
            sparse.values.device, sparse.values.dtype
        )
        linear.weight.copy_(sparse.weight)
        linear.bias.copy_(sparse.bias)
        torch.nn.utils.parametrize.register_parametrization(
            linear, "weight", Mask(sparse.mask().to(linear.weight.dtype))
        )
        linear.train(sparse.training)
        setattr(block, attribute, linear)
        del model.config.sparse_weights[name]
        restored += 1
    return restored


@torch.no_grad()
def fold_constant_units(model: nn.Module, unit: Unit) -> list[Item]:
    """Units whose output is zero or constant, their constant folded into the consumer bias (weights baked)."""
    size = unit.group_size(model)
    value_producer = unit.producers[-1]  # value for heads, intermediate for neurons
    found = []
    for layer, block in enumerate(unit.blocks(model)):
        if block is None:  # borrowed: folded once, at its owner
            continue
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
