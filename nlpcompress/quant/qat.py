"""Fake quantizers on the compact model's encoder linears, its classification head's dense matrix and its
embedding tables, and the packed model they become: attach (per-layer bits, group layout), measure the
quantization error per bit width, store."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn
from torch.nn.utils import parametrize

from nlpcompress.compact.quantized import QuantizedEmbedding, QuantizedLinear
from nlpcompress.compact.storage import set_linear
from nlpcompress.parametrize import transforms_of
from nlpcompress.quant.quantizers import FakeQuantize, GroupLayout, InputRange, fake_quantize, layout_for
from nlpcompress.surgery import HEAD_DENSE, encoder_linears, head_dense, packable_linears

ROW_LAYOUT = GroupLayout(dim=0, size=1)  # one range per table row or output channel
WORD_TABLES = ("word_embeddings",)
POSITION_TABLES = ("position_embeddings", "token_type_embeddings")


def layer_of(name: str) -> str:
    """``layers.<i>`` of a linear's config name ``layers.<i>.<block>.<linear>``."""
    return ".".join(name.split(".")[:2])


def quantizable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The dense, non-empty encoder linears by config name (a borrowed block once, at its owner)."""
    found = {}
    for name, block, attribute in encoder_linears(model):
        linear = getattr(block, attribute)
        if type(linear) is nn.Linear and linear.weight.numel() > 0:
            found[name] = linear
    return found


def layer_sizes(model: nn.Module) -> dict[str, int]:
    """Weights per unique encoder layer among the quantizable linears: what the bit budget weighs."""
    sizes: dict[str, int] = defaultdict(int)
    for name, linear in quantizable_linears(model).items():
        sizes[layer_of(name)] += linear.weight.numel()
    return dict(sizes)


def layouts(model: nn.Module, groups: str | int) -> dict[str, GroupLayout]:
    """The group layout of every quantizable linear (Q-BERT §3.2: per head for attention, per row for the FFN)."""
    head_size = model.config.attention_head_size
    return {
        name: layout_for(name, tuple(linear.weight.shape), head_size, groups)
        for name, linear in quantizable_linears(model).items()
    }


@torch.no_grad()
def quantization_errors(
    model: nn.Module, candidate_bits: list[int], groups: str | int, clip: str, percentile: float
) -> dict[str, dict[int, float]]:
    """‖Q_b(W) − W‖² summed over each layer's linears, per candidate bit width (for exact allocation)."""
    errors: dict[str, dict[int, float]] = defaultdict(lambda: dict.fromkeys(candidate_bits, 0.0))
    linears = quantizable_linears(model)
    for name, layout in layouts(model, groups).items():
        weight = linears[name].weight
        for bits in candidate_bits:
            error = (fake_quantize(weight, bits, layout, clip, percentile) - weight).pow(2).sum()
            errors[layer_of(name)][bits] += float(error)
    return dict(errors)


def attach_quantizers(
    model: nn.Module,
    layer_bits: dict[str, int],
    groups: str | int,
    embedding_bits: int | None,
    clip: str = "minmax",
    percentile: float = 99.9,
    position_embedding_bits: int | None = None,
    head_bits: int | None = None,
) -> dict[str, FakeQuantize]:
    """A ``FakeQuantize`` on every quantizable linear (its layer's bits), on the classification head's dense
    matrix (``head_bits``, per output channel), on the word embeddings (``embedding_bits``) and on the
    position and token-type tables (``position_embedding_bits``)."""
    linears = quantizable_linears(model)
    attached = {}
    for name, layout in layouts(model, groups).items():
        transform = FakeQuantize(layer_bits[layer_of(name)], layout, clip, percentile)
        parametrize.register_parametrization(
            linears[name], "weight", transform.to(linears[name].weight.device)
        )
        attached[name] = transform
    head = _dense_head(model) if head_bits is not None else None
    if head is not None:
        transform = FakeQuantize(head_bits, ROW_LAYOUT, clip, percentile).to(head.weight.device)
        parametrize.register_parametrization(head, "weight", transform)
        attached[HEAD_DENSE] = transform
    embeddings = model.base_model.embeddings
    for tables, bits in ((WORD_TABLES, embedding_bits), (POSITION_TABLES, position_embedding_bits)):
        for name in tables if bits is not None else ():
            table = getattr(embeddings, name, None)
            if type(table) is nn.Embedding:
                transform = FakeQuantize(bits, ROW_LAYOUT, clip, percentile).to(table.weight.device)
                parametrize.register_parametrization(table, "weight", transform)
                attached[name] = transform
    return attached


def _dense_head(model: nn.Module) -> nn.Linear | None:
    """The classification head's dense matrix while it is a plain, not yet quantized linear."""
    linear = head_dense(model)
    return linear if type(linear) is nn.Linear and not transforms_of(linear) else None


def _quantize_input(module: nn.Module, args: tuple) -> tuple:
    return (module.input_range(args[0]), *args[1:])


def attach_input_ranges(model: nn.Module) -> dict[str, InputRange]:
    """An ``InputRange`` on the input of every dense encoder linear, fake-quantized or not yet, and of the
    head's dense matrix once it is fake-quantized (child ``input_range``, applied by a forward pre-hook), so
    training sees the 8-bit inputs an int8 runtime computes with."""
    attached = {}
    for name, block, attribute in packable_linears(model):
        linear = getattr(block, attribute)
        if not isinstance(linear, nn.Linear) or linear.weight.numel() == 0:
            continue  # stored kinds and emptied linears are not quantized
        if name == HEAD_DENSE and _fake_quantizer(linear) is None:
            continue  # a float head keeps a float input
        linear.input_range = InputRange().to(linear.weight.device)
        linear.register_forward_pre_hook(_quantize_input)
        attached[name] = linear.input_range
    return attached


@torch.no_grad()
def calibrate_input_ranges(model: nn.Module, ranges: dict[str, InputRange], batches) -> None:
    """Start every range at the min and max its input takes on ``batches`` (dicts of model inputs), the
    model in evaluation mode (no dropout)."""
    was_training = model.training
    model.eval()
    for input_range in ranges.values():
        input_range.calibrating = True
    try:
        for batch in batches:
            model(**{key: value for key, value in batch.items() if key != "labels"})
    finally:
        for input_range in ranges.values():
            input_range.calibrating = False
        model.train(was_training)


def _fake_quantizer(module: nn.Module) -> FakeQuantize | None:
    chain = transforms_of(module)
    if not chain:
        return None
    if len(chain) > 1 or not isinstance(chain[0], FakeQuantize):
        raise ValueError(f"{type(module).__name__} carries {chain}: bake other transforms before quantizing")
    return chain[0]


@torch.no_grad()
def store_quantized(model: nn.Module) -> int:
    """Replace every fake-quantized linear by a packed ``QuantizedLinear`` (with its input's 8-bit grid when
    an ``InputRange`` learned one) and every fake-quantized embedding table by a ``QuantizedEmbedding``,
    recorded in the config; the logits stay those of the fake-quantized model."""
    config = model.config
    stored = 0
    for name, block, attribute in packable_linears(model):
        linear = getattr(block, attribute)
        transform = _fake_quantizer(linear)
        if transform is None:
            continue
        weight = linear.parametrizations.weight.original
        codes, scales = transform.codes_and_scales(weight)
        packed = QuantizedLinear.from_codes(
            codes, scales, linear.bias, int(transform.bits), transform.layout.dim, transform.layout.size
        )
        input_range = getattr(linear, "input_range", None)
        if isinstance(input_range, InputRange) and bool(input_range.seen):
            packed.quantize_input(*input_range.grid())
        packed.train(linear.training)
        set_linear(model, name, block, attribute, packed)
        stored += 1
    embeddings = model.base_model.embeddings
    for tables, key in ((WORD_TABLES, "bits"), (POSITION_TABLES, "position_bits")):
        for name in tables:
            table = getattr(embeddings, name, None)
            transform = _fake_quantizer(table) if isinstance(table, nn.Embedding) else None
            if transform is None:
                continue
            codes, scales = transform.codes_and_scales(table.parametrizations.weight.original)
            setattr(
                embeddings,
                name,
                QuantizedEmbedding.from_codes(codes, scales, int(transform.bits), table.padding_idx),
            )
            config.quantized_embeddings = {**(config.quantized_embeddings or {}), key: int(transform.bits)}
            stored += 1
    return stored
