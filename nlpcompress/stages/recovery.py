"""Recovery after a structural change: train with the stage's settings, on the task loss or distilling the
logits from the run's teacher (what `factorize` and `share_layers` do after changing the model)."""

from __future__ import annotations

from typing import Any

from nlpcompress.distill import DistillationConfig, distillation_terms
from nlpcompress.loss_terms import TaskLoss
from nlpcompress.stages.registry import Model, Stage, StageContext
from nlpcompress.trainer import CompressionTrainer
from nlpcompress.training import build_trainer, run_training, train_facts


def recover(
    stage: Stage, model: Model, ctx: StageContext, distillation: DistillationConfig | None
) -> dict[str, Any]:
    """Train ``model`` in place with ``stage``'s training settings; returns the training facts."""
    trainer = build_trainer(
        ctx,
        stage,
        model,
        trainer_class=CompressionTrainer,
        loss_terms=distillation_terms(distillation, []) if distillation else [TaskLoss()],
        teacher=ctx.teacher if distillation else None,
        teacher_dtype=distillation.teacher_dtype if distillation else "float32",
    )
    return train_facts(trainer, run_training(trainer, ctx))
