"""The binarizer of movement pruning (Sanh et al. 2020, §4): scores in, a 0/1 mask out, straight-through gradient.

TopK (hard movement, magnitude) keeps the ⌊keep · n⌋ largest scores: that is the threshold at the k-th
largest score, which the callback computes once per optimizer step (``topk_threshold``), so each
forward pass only compares. Soft movement thresholds sigmoid(S) at τ. The backward passes the mask's
gradient to the scores unchanged, so with the mask applied as ``W ⊙ M`` the scores receive
∂L/∂S = ∂L/∂W' ⊙ W (Eq. 4): they accumulate the weights' movement away from zero.
"""

from __future__ import annotations

import torch


def keep_count(keep: float, total: int) -> int:
    """How many of ``total`` scores a keep fraction leaves: ⌊keep · total⌋ (the authors' TopK)."""
    return int(keep * total)


def topk_threshold(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """The threshold that keeps the ⌊keep · n⌋ largest of ``scores`` (exactly so when they are distinct):
    the k-th largest score, or one above the largest when k = 0."""
    flat = scores.detach().flatten()
    k = keep_count(keep, flat.numel())
    if k == 0:
        return flat.max() + 1
    return flat.kthvalue(flat.numel() - k + 1).values


class ThresholdBinarizer(torch.autograd.Function):
    """M = 1 where the score is at least ``threshold`` (a global TopK threshold), or, with ``sigmoid``,
    where sigmoid(S) > ``threshold`` (soft movement, §4)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, threshold: float | torch.Tensor, sigmoid: bool) -> torch.Tensor:
        if sigmoid:
            return (torch.sigmoid(scores) > threshold).to(scores.dtype)
        return (scores >= threshold).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad, None, None
