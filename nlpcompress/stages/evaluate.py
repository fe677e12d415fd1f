"""The `evaluate` stage: score the incoming model unchanged (an already fine-tuned model to export)."""

from typing import ClassVar, Literal

from nlpcompress.stages.registry import Model, Stage, StageContext, StageOutput, register_stage
from nlpcompress.stages.training import evaluate


@register_stage
class EvaluateStage(Stage):
    """Scores the model as it comes, without training; like ``finetune`` it hands the model on as the
    teacher of later distilling stages."""

    type: Literal["evaluate"]
    provides_teacher: ClassVar[bool] = True

    def run(self, model: Model, ctx: StageContext) -> StageOutput:
        return StageOutput(model=model, metrics=evaluate(model, ctx), teacher=model)
