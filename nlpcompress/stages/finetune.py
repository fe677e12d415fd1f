"""The `finetune` stage: plain task fine-tuning with the Hugging Face Trainer."""

from nlpcompress.compact import CompactBertForSequenceClassification
from nlpcompress.recipe import FinetuneStage
from nlpcompress.stages.base import StageContext, StageOutput, register_runner
from nlpcompress.training import build_trainer, evaluate


@register_runner("finetune")
def run_finetune(
    stage: FinetuneStage, model: CompactBertForSequenceClassification, ctx: StageContext
) -> StageOutput:
    trainer = build_trainer(ctx, stage, model)
    result = trainer.train()
    return StageOutput(
        model=model,
        metrics=evaluate(model, ctx),
        info={"train_loss": result.training_loss, "train_steps": result.global_step},
    )
