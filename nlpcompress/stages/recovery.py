"""Recovery after a structural change: train with the stage's settings, on the task loss or distilling the
logits from the run's teacher (what `factorize` and `share_layers` do after changing the model), and the
settings that say so."""

from __future__ import annotations

from typing import Any

from nlpcompress.distill import DistillationConfig, distillation_terms
from nlpcompress.distill.config import logit_distillation
from nlpcompress.errors import ConfigError
from nlpcompress.loss_terms import TaskLoss
from nlpcompress.stages.registry import Model, Stage, StageContext, StageOutput
from nlpcompress.stages.training import build_trainer, evaluate, run_training, train_facts
from nlpcompress.trainer import CompressionTrainer


def recovery_distillation(distillation: object, recover: bool, stage: str) -> DistillationConfig | None:
    """A stage's ``distillation:`` for its recovery (kd or distilbert), which needs ``recover: true``."""
    distillation = logit_distillation(distillation, stage)
    if distillation is not None and not recover:
        raise ConfigError("distillation", distillation.as_dict(), "applies when recover is true")
    return distillation


def recovered(
    stage: Stage,
    model: Model,
    ctx: StageContext,
    recover_: bool,
    distillation: DistillationConfig | None,
    info: dict[str, Any],
) -> StageOutput:
    """The stage's output: ``model`` evaluated, then (with ``recover_``) trained and evaluated again."""
    info["metrics_before_recovery"] = metrics = evaluate(model, ctx)
    if recover_:
        info |= recover(stage, model, ctx, distillation)
        metrics = evaluate(model, ctx)
    return StageOutput(model=model, metrics=metrics, info=info)


def recover(
    stage: Stage, model: Model, ctx: StageContext, distillation: DistillationConfig | None
) -> dict[str, Any]:
    """Train ``model`` in place with ``stage``'s training settings; returns the training facts."""
    trainer = build_trainer(ctx, stage, model, **recovery_losses(ctx, distillation))
    return train_facts(trainer, run_training(trainer, ctx))


def recovery_losses(ctx: StageContext, distillation: DistillationConfig | None) -> dict[str, Any]:
    """``build_trainer`` arguments for training on the task loss, or distilling the run's teacher."""
    return {
        "trainer_class": CompressionTrainer,
        "loss_terms": distillation_terms(distillation, []) if distillation else [TaskLoss()],
        "teacher": ctx.teacher if distillation else None,
        "teacher_dtype": distillation.teacher_dtype if distillation else "float32",
    }
