"""The `finetune` stage: task fine-tuning (the CompressionTrainer with the task loss alone)."""

from typing import ClassVar, Literal

from nlpcompress.stages.registry import Model, Stage, StageContext, StageOutput, register_stage
from nlpcompress.stages.training import build_trainer, evaluate, run_training, train_facts


@register_stage
class FinetuneStage(Stage):
    """Task fine-tuning (the task loss alone); the result becomes the teacher of later distilling stages."""

    type: Literal["finetune"]
    provides_teacher: ClassVar[bool] = True

    def run(self, model: Model, ctx: StageContext) -> StageOutput:
        trainer = build_trainer(ctx, self, model)
        result = run_training(trainer, ctx)
        return StageOutput(
            model=model,
            metrics=evaluate(model, ctx),
            info=train_facts(trainer, result),
            teacher=model,
        )
