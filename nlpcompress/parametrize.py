"""Transforms of the compact model's linear weights: masks and gates as ``torch.nn.utils.parametrize``.

A transform computes the weight the forward pass sees from the stored one (``W ⊙ M``, ``W · diag(g)``,
later fake quantization). It attaches to a ``Linear``'s ``weight`` by a regular expression on module
names (``attach``); ``named_modules`` yields a shared module once, so a layer that ``layer_map``
uses at several depths gets one transform for all of them. ``bake`` writes the transformed weight
back into a plain ``Linear`` (the finalize step); ``detach`` drops transforms and restores the
stored weight. Transforms are buffers or parameters of the model, so checkpoints carry them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize


class WeightTransform(nn.Module):
    """Base of every transform nlpcompress attaches; ``forward(W)`` is the weight the layer uses."""

    def select(self, dim: int, index: torch.Tensor) -> WeightTransform:
        """The transform of the weight with only ``index`` kept along ``dim`` (heads or neurons removed)."""
        raise ValueError(f"{type(self).__name__} cannot follow a structural change; bake it first")


class Mask(WeightTransform):
    """A fixed 0/1 mask: the layer uses ``W ⊙ M``; masked weights get no gradient."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.detach().clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask.to(weight.dtype)

    def select(self, dim: int, index: torch.Tensor) -> Mask:
        return Mask(self.mask.index_select(dim, index.to(self.mask.device)))


class GroupGate(WeightTransform):
    """Gates on groups of input columns: column ``d`` is scaled by ``gate[d // group_size]``.

    On an attention output projection with ``group_size`` = head size, ``gate`` is the head mask ξ of
    Michel et al. (2019) §3 (``W_o · diag(ξ ⊗ 1)`` equals scaling each head's context); on an FFN
    output projection with ``group_size`` 1 it gates single neurons.
    """

    def __init__(self, gate: torch.Tensor, group_size: int, unit: str):
        super().__init__()
        self.group_size = group_size
        self.unit = unit
        self.register_buffer("gate", gate.detach().clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scale = self.gate.to(weight.dtype).repeat_interleave(self.group_size)
        return weight * scale

    def select(self, dim: int, index: torch.Tensor) -> GroupGate:
        if dim == 0:
            return GroupGate(self.gate, self.group_size, self.unit)
        groups = index.to(self.gate.device).view(-1, self.group_size)[:, 0] // self.group_size
        return GroupGate(self.gate.index_select(0, groups), self.group_size, self.unit)


def linears(model: nn.Module, pattern: str) -> dict[str, nn.Linear]:
    """The linears whose qualified names fully match ``pattern`` (a regex), each shared module once."""
    regex = re.compile(pattern)
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and regex.fullmatch(name)
    }


def attach(
    model: nn.Module, pattern: str, make: Callable[[str, nn.Linear], WeightTransform | None]
) -> dict[str, WeightTransform]:
    """Attach ``make(name, linear)`` to the weight of every linear matching ``pattern`` (None skips it)."""
    attached = {}
    for name, linear in linears(model, pattern).items():
        transform = make(name, linear)
        if transform is not None:
            parametrize.register_parametrization(linear, "weight", transform.to(linear.weight.device))
            attached[name] = transform
    return attached


def transforms_of(linear: nn.Module) -> list[WeightTransform]:
    """The transforms on ``linear.weight``, in the order they apply."""
    if not parametrize.is_parametrized(linear, "weight"):
        return []
    return [t for t in linear.parametrizations.weight if isinstance(t, WeightTransform)]


def transforms(model: nn.Module, kind: type[WeightTransform] = WeightTransform) -> dict[str, WeightTransform]:
    """``{module name: transform}`` for every attached transform of type ``kind`` (the first per module)."""
    found = {}
    for name, module in model.named_modules():
        for transform in transforms_of(module):
            if isinstance(transform, kind):
                found.setdefault(name, transform)
    return found


def stored_weight(linear: nn.Linear) -> torch.Tensor:
    """The weight as stored (before any transform): the parameter the optimizer updates."""
    if parametrize.is_parametrized(linear, "weight"):
        return linear.parametrizations.weight.original
    return linear.weight


def detach(model: nn.Module, keep: Callable[[WeightTransform], bool] = lambda t: False) -> None:
    """Remove the transforms ``keep`` rejects (by default all), restoring the stored weights."""
    for module in list(model.modules()):
        chain = transforms_of(module)
        if not chain or all(keep(t) for t in chain):
            continue
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        for transform in chain:
            if keep(transform):
                parametrize.register_parametrization(module, "weight", transform)


def bake(model: nn.Module) -> int:
    """Write every transformed weight into its plain ``Linear`` and drop the transforms; returns how many."""
    count = 0
    for module in list(model.modules()):
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            count += 1
    return count


def clone(module: nn.Module) -> nn.Module:
    """``copy.deepcopy`` whose parametrized modules are independent of the original's.

    torch's deepcopy of a parametrized module keeps the class that ``register_parametrization``
    generated for it; removing a parametrization from the copy then deletes the property from that
    shared class and breaks the original. Each copied module gets its own class.
    """
    twin = copy.deepcopy(module)
    for part in twin.modules():
        if parametrize.is_parametrized(part):
            generated = type(part)
            part.__class__ = type(generated.__name__, generated.__bases__, dict(generated.__dict__))
    return twin


def slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping rows (``dim=0``) or input columns (``dim=1``) ``index``, transforms sliced alike."""
    weight = stored_weight(linear).detach()
    index = index.long().to(weight.device)
    weight = weight.index_select(dim, index)
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
            new.bias.copy_(bias.index_select(0, index) if dim == 0 else bias)
    new.weight.requires_grad_(stored_weight(linear).requires_grad)
    for transform in transforms_of(linear):
        parametrize.register_parametrization(new, "weight", transform.select(dim, index))
    new.train(linear.training)
    return new
