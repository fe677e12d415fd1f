"""Finalize before saving: bake every weight transform, remove heads and FFN neurons that do nothing
(exactly: ``surgery.remove_dead_units``), store sparse linears compressed.

The result is a plain compact model (no parametrizations, no auxiliary modules) that the standalone
modeling files load, with the logits of the model that went in.

A dense linear that a registered storage kind holds exactly in at most ``SPARSE_STORAGE_RATIO`` of its
dense bytes is stored in the smallest such kind (a bitmask plus the non-zero values, or another pattern;
listed in ``config.stored_linears``): the file shrinks with the density. ``densify`` turns such a model
back into dense linears with fixed masks, for further compression.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nlpcompress.compact.storage import DENSE, StoredLinear, kind_of, set_linear, smallest_storage
from nlpcompress.parametrize import Mask, bake
from nlpcompress.surgery import encoder_linears, remove_dead_units

SPARSE_STORAGE_RATIO = 0.9


def finalize(model: nn.Module) -> dict[str, Any]:
    """Bake transforms, remove empty heads and neurons (dense models), store linears compressed; returns what
    was done."""
    report: dict[str, Any] = {"baked_transforms": bake(model)}
    if all(kind_of(getattr(block, attribute)) == DENSE for _, block, attribute in encoder_linears(model)):
        report |= remove_dead_units(model)  # units are cut from dense matrices; other kinds are final
    stored = store_compressed(model)
    report["sparse_linears"] = stored.pop("sparse", 0)
    report |= {f"{kind}_linears": count for kind, count in stored.items()}
    return report


@torch.no_grad()
def store_compressed(model: nn.Module) -> dict[str, int]:
    """Store each dense encoder linear in the registered kind that holds it exactly in the fewest bytes, when
    that is at most ``SPARSE_STORAGE_RATIO`` of its dense bytes; returns how many went to each kind."""
    stored: dict[str, int] = {}
    for name, block, attribute in encoder_linears(model):
        linear = getattr(block, attribute)
        if kind_of(linear) != DENSE or linear.weight.numel() == 0:
            continue
        dense_bytes = linear.weight.numel() * linear.weight.element_size()
        compressed = smallest_storage(linear, SPARSE_STORAGE_RATIO * dense_bytes)
        if compressed is not None:
            set_linear(model, name, block, attribute, compressed)
            stored[compressed.kind] = stored.get(compressed.kind, 0) + 1
    return stored


@torch.no_grad()
def densify(model: nn.Module) -> int:
    """Linears of a kind that stores zeros by pattern back to dense ones, each with a fixed ``Mask`` of that
    pattern, so further training keeps the zeros; returns how many."""
    restored = 0
    for name, block, attribute in encoder_linears(model):
        stored = getattr(block, attribute)
        mask = stored.fixed_mask() if isinstance(stored, StoredLinear) else None
        if mask is None:
            continue
        linear = stored.to_dense()
        torch.nn.utils.parametrize.register_parametrization(
            linear, "weight", Mask(mask.to(linear.weight.dtype))
        )
        set_linear(model, name, block, attribute, linear)
        restored += 1
    return restored
