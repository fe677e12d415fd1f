"""Structural edits of the compact model: where its encoder linears are, its units (attention heads and FFN
neurons), and removing units for real.

A unit is a group of output rows of its *producer* linears (Q, K and V for a head; the intermediate
linear for a neuron) and the matching input columns of its *consumer* linear (the attention output
projection; the FFN output linear). A unit is named ``(layer, index)``, ``layer`` being a *unique* layer
of the compact model (an index into ``config.heads_per_layer`` / ``config.intermediate_sizes``).

Removal is exact:

- a unit whose consumer columns are all zero contributes nothing;
- a neuron whose intermediate row is all zero outputs the constant act(b); a head whose value rows are
  all zero outputs its value bias (attention probabilities sum to 1). Their contribution through the
  consumer is a constant, folded into the consumer's bias before removal.

``finalize``, the pruning techniques and the stages use these; this module imports only the model's floor.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from nlpcompress.parametrize import slice_linear

Item = tuple[int, int]
# The linears of a compact layer's blocks, as their config names end: layers.<i>.<block>.<linear>
ENCODER_LINEARS = {"attention": ("query", "key", "value", "output"), "ffn": ("intermediate", "output")}
# The classification head's dense (pooler) matrix, by its config name
HEAD_DENSE = "classifier.dense"


def encoder_linears(model: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """(config name, block, attribute) of every encoder linear of every unique layer (a borrowed block once,
    at its owner)."""
    for index, layer in enumerate(model.base_model.encoder.layers):
        for block_name, names in ENCODER_LINEARS.items():
            block = getattr(layer, block_name)
            for name in names if block is not None else ():  # a borrowed block is its owner's
                yield f"layers.{index}.{block_name}.{name}", block, name


def head_dense(model: nn.Module) -> nn.Module | None:
    """The classification head's dense (pooler) matrix, ``classifier.dense``, where the model has one."""
    linear = getattr(getattr(model, "classifier", None), "dense", None)
    return linear if isinstance(linear, nn.Module) else None


def packable_linears(model: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """:func:`encoder_linears`, then the classification head's dense matrix (:func:`head_dense`) where the
    model has one: every linear a packed storage kind may hold."""
    yield from encoder_linears(model)
    if head_dense(model) is not None:
        yield HEAD_DENSE, model.classifier, "dense"


@dataclass(frozen=True)
class Unit:
    """Where a kind of unit lives in a compact layer and which config field counts it."""

    name: str  # plural, as in messages: "heads", "neurons"
    block: str  # attribute of the compact layer: "attention" or "ffn"
    producers: tuple[str, ...]
    consumer: str
    config_field: str
    owner_field: str  # the config field naming, per unique layer, the layer whose block it runs

    @property
    def singular(self) -> str:
        return self.name.removesuffix("s")

    def group_size(self, model: nn.Module) -> int:
        return model.config.attention_head_size if self.block == "attention" else 1

    def counts(self, model: nn.Module) -> list[int]:
        return list(getattr(model.config, self.config_field))

    def blocks(self, model: nn.Module) -> list[nn.Module | None]:
        """Each unique layer's block of this kind; None where the layer borrows its owner's."""
        return [getattr(layer, self.block) for layer in model.base_model.encoder.layers]

    def consumers(self, model: nn.Module) -> list[nn.Linear]:
        return [getattr(block, self.consumer) for block in self.blocks(model)]

    def consumer_pattern(self) -> str:
        return rf"(.*\.)?encoder\.layers\.\d+\.{self.block}\.{self.consumer}"


HEADS = Unit(
    "heads", "attention", ENCODER_LINEARS["attention"][:3], "output", "heads_per_layer", "attention_owner"
)
NEURONS = Unit("neurons", "ffn", ENCODER_LINEARS["ffn"][:1], "output", "intermediate_sizes", "ffn_owner")


def check_items(unit: Unit, counts: Sequence[int], items: Iterable[Sequence[int]]) -> list[Item]:
    """``items`` as sorted unique ``(layer, index)`` tuples; ValueError naming the valid range otherwise."""
    checked = set()
    for item in items:
        layer, index = (int(value) for value in item)
        if not 0 <= layer < len(counts):
            raise ValueError(
                f"layer index {layer} is out of range: the model has {len(counts)} unique layers "
                f"(0..{len(counts) - 1})"
            )
        if not 0 <= index < counts[layer]:
            raise ValueError(
                f"{unit.singular} index {index} is out of range for layer {layer}, "
                f"which has {counts[layer]} {unit.name}"
            )
        checked.add((layer, index))
    return sorted(checked)


def remove_units(model: nn.Module, unit: Unit, items: Iterable[Sequence[int]]) -> nn.Module:
    """Physically remove ``items`` from the producer rows and consumer columns; returns the model, edited.

    Layers may end with different counts, or none (attention is then skipped and the FFN adds only its
    output bias). The config field is updated, so ``save_pretrained`` writes a smaller model that the
    Auto classes reload. The logits equal those of the model with the removed units gated off.
    Indices are those before removal. Masks and gates on the linears are sliced along.
    """
    counts = unit.counts(model)
    items = check_items(unit, counts, items)
    size = unit.group_size(model)
    for layer, block in enumerate(unit.blocks(model)):
        drop = {index for layer_, index in items if layer_ == layer}
        if not drop or block is None:  # a borrowed block changes with its owner
            continue
        keep = [index for index in range(counts[layer]) if index not in drop]
        columns = torch.tensor(
            [index * size + offset for index in keep for offset in range(size)], dtype=torch.long
        )
        for name in unit.producers:
            setattr(block, name, slice_linear(getattr(block, name), columns, 0))
        setattr(block, unit.consumer, slice_linear(getattr(block, unit.consumer), columns, 1))
        if unit is HEADS:
            block.num_heads = len(keep)
        counts[layer] = len(keep)
    owners = getattr(model.config, unit.owner_field)
    setattr(model.config, unit.config_field, [counts[owner] for owner in owners])
    return model


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


def remove_dead_units(model: nn.Module) -> dict[str, int]:
    """Remove the heads and FFN neurons whose output is zero or constant (folded first); how many of each."""
    report = {}
    for unit in (HEADS, NEURONS):
        empty = fold_constant_units(model, unit)
        remove_units(model, unit, empty)
        report[f"removed_{unit.name}"] = len(empty)
    return report
