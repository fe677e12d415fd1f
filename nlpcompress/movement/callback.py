"""The Trainer face of movement pruning: the schedule sets the masks' keep fraction or threshold every step."""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState

from nlpcompress.loss_terms import LossBatch, LossTerm
from nlpcompress.movement.binarizers import topk_threshold
from nlpcompress.movement.config import MovementConfig
from nlpcompress.movement.masks import ScoreMask, owned_scores, refresh_magnitude_scores, score_masks
from nlpcompress.movement.schedule import cubic_schedule
from nlpcompress.parametrize import stored_weight, transforms_of

logger = logging.getLogger(__name__)

NEGLIGIBLE_SPARSITY = 0.01
"""Soft movement ending with fewer of the masked weights removed than this pruned nothing worth keeping."""


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
        self.warnings: list[str] = []

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
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model=None,
        optimizer=None,
        lr_scheduler=None,
        **kwargs,
    ):
        self.apply(model, self.schedule(state.global_step, state.max_steps))
        if self.config.method == "soft_movement" and state.global_step == 0:
            travel = score_travel(optimizer, lr_scheduler, state.max_steps)
            if travel is not None and travel < self.config.score_to_prune:
                self.warn(
                    f"soft movement will likely prune nothing: scores start at 0 and must fall below "
                    f"{-self.config.score_to_prune:.2f} (sigmoid(S) < threshold {self.config.threshold}), "
                    f"and Adam moves a score by about its learning rate per step, "
                    f"{travel:.2f} over these {state.max_steps} steps; raise scores_learning_rate or "
                    f"train longer (lambda_l1 sets how many scores fall, not how fast)"
                )

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs
    ):
        self.apply(model, self.schedule(state.global_step, state.max_steps))

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs
    ):
        self.apply(model, self.schedule(state.max_steps, state.max_steps))
        if self.config.method != "soft_movement":
            return
        removed = 1.0 - mask_density(model)
        if removed < NEGLIGIBLE_SPARSITY:
            self.warn(
                f"soft movement removed {removed:.2%} of the masked weights in {state.max_steps} steps: "
                f"the model is not pruned; raise scores_learning_rate, train longer, or use "
                f"method movement or magnitude with a sparsity target"
            )

    def warn(self, message: str) -> None:
        """Log ``message`` and keep it for the stage's results."""
        logger.warning(message)
        self.warnings.append(message)

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
            state.log_history[-1]["mask_density"] = round(mask_density(model), 4)
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


@torch.no_grad()
def mask_density(model: nn.Module) -> float:
    """The fraction of the masked weights the forward pass keeps (1.0 without score masks)."""
    kept = total = 0
    for module in model.modules():
        for mask in transforms_of(module):
            if isinstance(mask, ScoreMask):
                weight = stored_weight(module)
                kept += int(mask.expansion.expand(mask.small_mask(), weight.shape).sum())
                total += weight.numel()
    return kept / total if total else 1.0


def score_travel(optimizer: torch.optim.Optimizer | None, lr_scheduler: object, steps: int) -> float | None:
    """How far Adam moves a score in ``steps`` steps under a steady gradient: the sum of the scores
    group's learning rate over the schedule, since Adam's update m̂/√v̂ is then about 1 (more while
    the gradient grows, as λ ramps; 3.2 at most for the default betas: Kingma & Ba 2015, §2.1).
    None without a ``scores`` group or a LambdaLR schedule to read it from."""
    if optimizer is None or not isinstance(lr_scheduler, LambdaLR):
        return None
    for index, group in enumerate(optimizer.param_groups):
        if group.get("name") == "scores":
            factor = lr_scheduler.lr_lambdas[index]
            return lr_scheduler.base_lrs[index] * sum(factor(step) for step in range(steps))
    return None


def _pools(masks: list[ScoreMask]) -> dict[str, list[ScoreMask]]:
    """Masks whose scores are ranked together: all weights, all blocks, heads, neurons."""
    pools: dict[str, list[ScoreMask]] = {}
    for mask in masks:
        pools.setdefault(mask.unit or mask.expansion.pool, []).append(mask)
    return pools
