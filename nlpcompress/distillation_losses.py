"""Loss functions on tensors for distillation (DistilBERT, TinyBERT), plus the student→teacher layer map.

Masks are ``(batch, length)`` 1/0 attention masks; padded positions never contribute. Every term is
a mean over the positions that count, so its scale does not depend on batch size or padding.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _rows(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Logits as (rows, classes): one row per example, or per unpadded token for token-level logits."""
    if logits.dim() == 3 and mask is not None:
        return logits[mask.bool()]
    return logits.reshape(-1, logits.shape[-1])


def soft_target_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """DistilBERT L_ce (Sanh et al. 2019, §2; Hinton et al. 2015): T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)).

    Mean over rows (``KLDivLoss(reduction="batchmean")`` as in the DistilBERT code); T² keeps the
    gradient scale independent of T. Token-level logits (MLM) use the unpadded tokens of ``mask``.
    """
    student = F.log_softmax(_rows(student_logits, mask) / temperature, dim=-1)
    teacher = F.log_softmax(_rows(teacher_logits, mask).to(student.dtype) / temperature, dim=-1)
    return F.kl_div(student, teacher, reduction="batchmean", log_target=True) * temperature**2


def soft_cross_entropy(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """TinyBERT L_pred (Jiao et al. 2020, Eq. 13): CE(z_T/t, z_S/t) = -softmax(z_T/t)·log_softmax(z_S/t).

    Mean over rows, no T² factor (as in the paper and its code).
    """
    student = F.log_softmax(_rows(student_logits, mask) / temperature, dim=-1)
    teacher = F.softmax(_rows(teacher_logits, mask).to(student.dtype) / temperature, dim=-1)
    return -(teacher * student).sum(dim=-1).mean()


def regression_distill(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """The soft-target term for one regression output (STS-B): MSE between the predictions."""
    return F.mse_loss(student_logits.float(), teacher_logits.float())


def cosine_hidden(
    student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """DistilBERT L_cos (§2): ``CosineEmbeddingLoss`` with target 1, i.e. mean(1 - cos), over unpadded tokens."""
    student, teacher = _tokens(student_hidden, mask), _tokens(teacher_hidden, mask)
    return (1.0 - F.cosine_similarity(student, teacher.to(student.dtype), dim=-1)).mean()


def hidden_mse(
    student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """TinyBERT L_hidn / L_embd (Eq. 9-10): MSE(H_S W_h, H_T) over unpadded tokens.

    The caller applies the projection W_h (or W_e) to ``student_hidden`` when the widths differ.
    """
    student, teacher = _tokens(student_hidden, mask), _tokens(teacher_hidden, mask)
    return F.mse_loss(student, teacher.to(student.dtype))


def attention_mse(
    student_scores: torch.Tensor, teacher_scores: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """TinyBERT L_attn (Eq. 7-8): (1/h) Σ_heads MSE(A_S, A_T) on unnormalised attention scores.

    Scores are ``(batch, heads, length, length)``; a (query, key) pair counts only when both tokens
    are unpadded, so padding never enters (the TinyBERT code zeroes masked scores for the same end).
    """
    diff = (student_scores - teacher_scores.to(student_scores.dtype)).pow(2)
    if mask is None:
        return diff.mean()
    pairs = (mask[:, None, :, None] * mask[:, None, None, :]).to(diff.dtype)  # (batch, 1, L, L)
    return (diff * pairs).sum() / (pairs.sum() * diff.shape[1])


def _tokens(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(batch, length, width) -> (unpadded tokens, width)."""
    return hidden[mask.bool()] if mask is not None else hidden.reshape(-1, hidden.shape[-1])


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """TinyBERT §3.1 g(m) = m·N/M for student layers m = 1..M (floored, at least 1); g(0) = 0 is implied.

    Entries are teacher layer numbers in ``hidden_states`` indexing (0 = embeddings, N = last layer).
    """
    return [max(1, m * teacher_layers // student_layers) for m in range(1, student_layers + 1)]


def check_layer_map(layer_map: Sequence[int], student_layers: int, teacher_layers: int) -> list[int]:
    """``layer_map`` as a list, or ValueError naming what is wrong."""
    if len(layer_map) != student_layers:
        raise ValueError(
            f"has {len(layer_map)} entries; the student has {student_layers} layers (one teacher layer each)"
        )
    bad = [g for g in layer_map if not (isinstance(g, int) and 1 <= g <= teacher_layers)]
    if bad:
        raise ValueError(f"entries {bad} are out of range; teacher layers are numbered 1..{teacher_layers}")
    return list(layer_map)
