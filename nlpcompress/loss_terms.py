"""Loss terms of the compression Trainer: each is a weight and a function of the batch's outputs.

A term says which model outputs it needs (hidden states, attention scores) and whether it needs
the teacher; the Trainer asks for exactly those and adds ``weight · term`` up. A recipe's
distillation weights choose them by name (``distill.distillation_terms``); a technique adds its own
term object (movement pruning's score regulariser). The tensor arithmetic lives in ``nlpcompress.distillation_losses``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers.utils import ModelOutput

from nlpcompress import distillation_losses as losses


@dataclass
class LossBatch:
    """What a term may read: the student's and teacher's outputs, the attention mask, the trained model."""

    student: ModelOutput
    teacher: ModelOutput | None
    mask: torch.Tensor | None
    model: nn.Module


class LossTerm:
    """``weight · value(batch)``; ``name`` is also the logged key ``loss_<name>``.

    ``weight`` may change during training (a callback ramping a regulariser); the value is logged
    unweighted.
    """

    kind: ClassVar[str]
    outputs: ClassVar[frozenset[str]] = frozenset()  # model forward flags: output_hidden_states, ...
    uses_teacher: ClassVar[bool] = True

    def __init__(self, weight: float = 1.0, name: str | None = None):
        self.weight = float(weight)
        self.name = name or self.kind

    def __call__(self, batch: LossBatch) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weight={self.weight}, name={self.name!r})"


class TaskLoss(LossTerm):
    """The student's own loss on the labels (cross-entropy, or MSE for regression)."""

    kind = "task"
    uses_teacher = False

    def __call__(self, batch: LossBatch) -> torch.Tensor:
        if batch.student.loss is None:
            raise ValueError("the task loss needs labels in the batch")
        return batch.student.loss


class _SoftTargets(LossTerm):
    """A term on the teacher's logits softened at ``temperature``; MSE for one regression output (STS-B)."""

    soft: ClassVar[Callable[..., torch.Tensor]]

    def __init__(self, weight: float = 1.0, temperature: float = 1.0, name: str | None = None):
        super().__init__(weight, name)
        self.temperature = temperature

    def __call__(self, batch: LossBatch) -> torch.Tensor:
        student, teacher = batch.student.logits, batch.teacher.logits.float()
        if student.shape[-1] == 1:
            return losses.regression_distill(student, teacher)
        return type(self).soft(student, teacher, self.temperature, batch.mask)


class SoftTargetKL(_SoftTargets):
    """DistilBERT / Hinton et al.: T² · KL(teacher ‖ student) on softened logits."""

    kind = "kd"
    soft = losses.soft_target_kl


class SoftCrossEntropy(_SoftTargets):
    """TinyBERT's prediction loss: soft cross-entropy at temperature t, no T² factor."""

    kind = "soft_ce"
    soft = losses.soft_cross_entropy


class CosineHidden(LossTerm):
    """DistilBERT's cosine term on the last hidden states."""

    kind = "cos"
    outputs = frozenset({"output_hidden_states"})

    def __call__(self, batch: LossBatch) -> torch.Tensor:
        return losses.cosine_hidden(
            batch.student.hidden_states[-1], batch.teacher.hidden_states[-1], batch.mask
        )


class EmbeddingMSE(LossTerm):
    """TinyBERT L_embd: MSE between the (projected) embedding outputs."""

    kind = "embd"
    outputs = frozenset({"output_hidden_states"})

    def __call__(self, batch: LossBatch) -> torch.Tensor:
        return losses.hidden_mse(batch.student.hidden_states[0], batch.teacher.hidden_states[0], batch.mask)


class _Layered(LossTerm):
    """Σ over student layers m = 1..M of ``measure`` against teacher layer g = ``teacher_layers[m - 1]`` (1..N).

    ``output`` names the per-layer outputs; ``first`` is the index of layer 1 in them (hidden states
    start with the embeddings, attention scores with layer 1).
    """

    output: ClassVar[str]
    first: ClassVar[int]
    measure: ClassVar[Callable[..., torch.Tensor]]

    def __init__(self, weight: float = 1.0, teacher_layers: Sequence[int] = (), name: str | None = None):
        super().__init__(weight, name)
        self.teacher_layers = list(teacher_layers)

    def __call__(self, batch: LossBatch) -> torch.Tensor:
        student, teacher = getattr(batch.student, self.output), getattr(batch.teacher, self.output)
        shift = self.first - 1
        return sum(
            type(self).measure(student[m + shift], teacher[g + shift], batch.mask)
            for m, g in enumerate(self.teacher_layers, start=1)
        )


class HiddenMSE(_Layered):
    """TinyBERT L_hidn: Σ_m MSE(H_m^S W_h, H_g(m)^T)."""

    kind = "hidn"
    outputs = frozenset({"output_hidden_states"})
    output, first, measure = "hidden_states", 1, losses.hidden_mse


class AttentionMSE(_Layered):
    """TinyBERT L_attn: Σ_m MSE of unnormalised attention scores, averaged over heads."""

    kind = "attn"
    outputs = frozenset({"output_attention_scores"})
    output, first, measure = "attention_scores", 0, losses.attention_mse
