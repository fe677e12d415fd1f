"""N:M semi-structured sparsity: in every group of M consecutive inputs of a row, N weights are kept.

The kept N are those of the largest score: the weight's magnitude (one shot, as the 2:4 recipe of Mishra
et al. 2021, §3: prune a trained model, then fine-tune with the mask fixed), or a learned movement score
(Sanh et al. 2020, §3: S starts at |W| and moves by -∂L/∂W' · W, the straight-through gradient of the
top-N selection, so weights moving away from zero stay). Groups run along the input dimension, the
layout sparse tensor cores read. Pure tensors and parametrizations; the stage trains them.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from nlpcompress.parametrize import Mask, WeightTransform, attach, transforms

SCORES = ("magnitude", "movement")


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The (rows, columns) boolean mask keeping the ``n`` largest ``scores`` of every ``m`` consecutive
    columns of each row (ties go to the lower column)."""
    rows, columns = scores.shape
    if columns % m:
        raise ValueError(f"{columns} columns do not split into groups of {m}")
    grouped = scores.reshape(rows, columns // m, m)
    kept = grouped.topk(n, dim=-1, sorted=False).indices
    return torch.zeros_like(grouped, dtype=torch.bool).scatter(2, kept, True).view(rows, columns)


class _TopNPerGroup(torch.autograd.Function):
    """Forward: the 0/1 top-N mask of the scores; backward: the gradient passes straight through."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
        return nm_mask(scores, n, m).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


class NMScores(WeightTransform):
    """Learned movement scores ``nm_scores`` (one per weight); the layer uses ``W ⊙ TopN_M(S)``.

    With the straight-through mask, ∂L/∂S = ∂L/∂W' ⊙ W: the movement score of Sanh et al. (2020) §3.
    """

    def __init__(self, weight: torch.Tensor, n: int, m: int):
        super().__init__()
        self.n, self.m = n, m
        self.nm_scores = nn.Parameter(weight.detach().abs().clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * _TopNPerGroup.apply(self.nm_scores, self.n, self.m)

    def mask(self) -> torch.Tensor:
        return nm_mask(self.nm_scores.detach(), self.n, self.m)


def nm_linears(model: nn.Module, m: int, include: str) -> dict[str, nn.Linear]:
    """The non-empty dense encoder linears whose config name (``layers.<i>.<block>.<linear>``) fully matches
    ``include`` and whose inputs split into groups of ``m``, by module name."""
    regex = re.compile(include)
    found = {}
    for name, module in model.named_modules():
        _, _, config_name = name.rpartition("encoder.")
        if (
            type(module) is nn.Linear
            and ".encoder.layers." in f".{name}"
            and regex.fullmatch(config_name)
            and module.weight.numel()
            and module.in_features % m == 0
        ):
            found[name] = module
    return found


def attach_nm(model: nn.Module, n: int, m: int, score: str, include: str = ".*") -> list[str]:
    """Mask every matching encoder linear ``n:m``: a fixed magnitude mask, or learned movement scores;
    returns the masked module names."""
    if score not in SCORES:
        raise ValueError(f"score {score!r}; allowed: {', '.join(SCORES)}")
    chosen = nm_linears(model, m, include)

    def make(name: str, linear: nn.Linear) -> WeightTransform:
        if score == "magnitude":
            return Mask(nm_mask(linear.weight.detach().abs(), n, m).to(linear.weight.dtype))
        return NMScores(linear.weight, n, m)

    return list(attach(model, "|".join(re.escape(name) for name in chosen) or "(?!)", make))


def freeze_scores(model: nn.Module) -> int:
    """Replace learned N:M scores by the fixed masks they choose now; returns how many."""
    frozen = 0
    for name, transform in transforms(model, NMScores).items():
        linear = model.get_submodule(name)
        chain = linear.parametrizations.weight
        index = next(i for i, t in enumerate(chain) if t is transform)
        chain[index] = Mask(transform.mask().to(transform.nm_scores.dtype))
        frozen += 1
    return frozen
