"""The Trainer face of movement pruning: the schedule sets the masks' keep fraction or threshold every step."""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState

from nlpcompress.loss_terms import LossBatch, LossTerm, register_term
from nlpcompress.movement.binarizers import topk_threshold
from nlpcompress.movement.config import MovementConfig
from nlpcompress.movement.masks import ScoreMask, owned_scores, refresh_magnitude_scores, score_masks
from nlpcompress.movement.schedule import cubic_schedule
from nlpcompress.parametrize import stored_weight, transforms_of

logger = logging.getLogger(__name__)


@register_term
class ScoreL1(LossTerm):
    """Soft movement's regulariser (Sanh et al. 2020, §4): mean over score tensors of mean sigmoid(S),
    as in the authors' code (each tensor's L1 norm of sigmoid(S) over its size, averaged).

    Its weight follows the threshold schedule, λ_t = λ · τ_t / τ (the authors' code): each call reads
    τ_t from the model's masks, so the weight needs no callback of its own and survives a resume.
    """

    kind = "scores_l1"
    uses_teacher = False

    def __init__(self, lambda_l1: float, final_threshold: float, name: str | None = None):
        super().__init__(0.0, name)
        self.lambda_l1, self.final_threshold = lambda_l1, final_threshold

    def __call__(self, batch: LossBatch) -> torch.Tensor:
        masks = list(owned_scores(batch.model))
        self.weight = self.lambda_l1 * float(masks[0].threshold) / self.final_threshold
        return torch.stack([torch.sigmoid(mask.score_tensor).mean() for mask in masks]).mean()


class MovementCallback(TrainerCallback, ExportableState):
    """Steps the cubic schedule: before every optimizer step (and at the start and end of training)
    the masks get their TopK threshold, the k-th largest score for the schedule's keep fraction (of
    each score tensor with ``local`` scope, of each pool with ``global``; the same on every process,
    since the scores are), or soft movement's τ.

    Scores and masks live in the model, so checkpoints carry them; the schedule position is the
    Trainer's ``global_step``. A resumed run therefore sets the same masks as an uninterrupted one.
    """

    def __init__(self, config: MovementConfig | dict):
        self.config = MovementConfig(**config) if isinstance(config, dict) else config

    def state(self) -> dict:
        return {"args": {"config": self.config.as_dict()}, "attributes": {}}

    def schedule(self, step: int, total: int) -> float:
        """The keep fraction (TopK methods) or τ (soft movement) at ``step`` of ``total``."""
        config = self.config
        warmup = math.floor(config.warmup_fraction * total)
        cooldown = math.floor(config.cooldown_fraction * total)
        if config.method == "soft_movement":
            return cubic_schedule(step, total, config.initial_threshold, config.threshold, warmup, cooldown)
        return cubic_schedule(step, total, 1.0, 1.0 - config.sparsity, warmup, cooldown)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs
    ):
        self.apply(model, self.schedule(state.global_step, state.max_steps))

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs
    ):
        self.apply(model, self.schedule(state.global_step, state.max_steps))

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs
    ):
        self.apply(model, self.schedule(state.max_steps, state.max_steps))

    @torch.no_grad()
    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model=None,
        logs=None,
        **kwargs,
    ):
        """Training logs get ``mask_density``: the fraction of the masked weights the forward pass keeps."""
        if logs and "loss" in logs and state.log_history:
            kept = total = 0
            for module in model.modules():
                for mask in transforms_of(module):
                    if isinstance(mask, ScoreMask):
                        weight = stored_weight(module)
                        kept += int(mask.expansion.expand(mask.small_mask(), weight.shape).sum())
                        total += weight.numel()
            state.log_history[-1]["mask_density"] = round(kept / total, 4) if total else 1.0
            logger.info(
                "step %d: mask density %.4f", state.global_step, state.log_history[-1]["mask_density"]
            )

    @torch.no_grad()
    def apply(self, model: nn.Module, value: float) -> None:
        """Set every mask for schedule value ``value``."""
        masks = score_masks(model)
        if self.config.method == "magnitude":
            refresh_magnitude_scores(model)
        if self.config.method == "soft_movement":
            for mask in masks:
                mask.threshold = value
        elif self.config.scope == "local":
            thresholds = {id(m.score_tensor): topk_threshold(m.score_tensor, value) for m in masks if m.owner}
            for mask in masks:
                mask.threshold = thresholds[id(mask.score_tensor)]
        else:
            for pool in _pools(masks).values():
                scores = torch.cat([mask.score_tensor.flatten() for mask in pool if mask.owner])
                threshold = topk_threshold(scores, value)
                for mask in pool:
                    mask.threshold = threshold


def _pools(masks: list[ScoreMask]) -> dict[str, list[ScoreMask]]:
    """Masks whose scores are ranked together: all weights, all blocks, heads, neurons."""
    pools: dict[str, list[ScoreMask]] = {}
    for mask in masks:
        pools.setdefault(mask.unit or mask.expansion.pool, []).append(mask)
    return pools
