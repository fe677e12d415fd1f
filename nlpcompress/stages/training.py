"""The stages' Trainer plumbing: arguments from a recipe, the stage's Trainer, resuming it, the run's metrics."""

import logging
from pathlib import Path
from typing import Any

import torch
from transformers import (
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from nlpcompress.distill.config import AugmentConfig
from nlpcompress.distributed import backend, world_size
from nlpcompress.errors import UserError
from nlpcompress.evaluation import evaluate_splits
from nlpcompress.glue import trainer_metrics
from nlpcompress.stages.augmentation import augmented_train
from nlpcompress.stages.registry import Stage, StageContext
from nlpcompress.stages.teachers import trained_on
from nlpcompress.trainer import CompressionTrainer

logger = logging.getLogger(__name__)

# Defaults a compression run wants; any of them can be overridden in the recipe's `training`.
TRAINING_DEFAULTS: dict[str, Any] = {
    "report_to": "none",
    # a checkpoint every quarter of a stage (only the last kept), so an interrupted run resumes mid-stage
    "save_strategy": "steps",
    "save_steps": 0.25,
    "save_total_limit": 1,
    "eval_strategy": "no",
    "logging_steps": 50,
    "per_device_eval_batch_size": 64,
    "dataloader_num_workers": 0,
    "dataloader_pin_memory": False,
}


def training_arguments(ctx: StageContext, stage: Stage, **overrides: Any) -> TrainingArguments:
    """TrainingArguments for ``stage``: toolkit defaults < recipe and stage `training` (``ctx.training``) < code."""
    values = {**TRAINING_DEFAULTS, **ctx.training, **overrides}
    values.setdefault("disable_tqdm", not ctx.progress)
    if world_size() > 1:
        values.setdefault("ddp_backend", backend())  # without it, CPU processes would each train on all rows
        values.setdefault("use_cpu", not torch.cuda.is_available())  # else accelerate wraps no DDP on CPU
    try:
        return TrainingArguments(output_dir=str(ctx.work_dir), seed=ctx.seed, **values)
    except (TypeError, ValueError) as err:
        raise UserError(f"stage {stage.name!r}: bad training arguments: {str(err).splitlines()[0]}") from err


def collator(ctx: StageContext) -> DataCollatorWithPadding:
    return DataCollatorWithPadding(ctx.tokenizer)


def build_trainer(
    ctx: StageContext,
    stage: Stage,
    model: torch.nn.Module,
    trainer_class: type[Trainer] = CompressionTrainer,
    callbacks: list | None = None,
    augment: AugmentConfig | None = None,
    **trainer_kwargs: Any,
) -> Trainer:
    """A CompressionTrainer (the task loss alone, unless ``trainer_kwargs`` give loss terms) or another
    Trainer class on the run's train split, evaluating on the first eval split; ``callbacks`` and the
    run's (``ctx.callbacks``) are passed to it.

    ``augment``: the train split with TinyBERT's augmented copies, labelled by ``trainer_kwargs["teacher"]``
    (``stages.augmentation``); its facts are ``trainer.augment_facts`` for ``train_facts``.
    """
    if ctx.train_dataset is None:
        raise UserError(f"stage {stage.name!r} trains, but task {ctx.task.name!r} has no train split loaded")
    args = training_arguments(ctx, stage, **trainer_kwargs.pop("args_overrides", {}))
    train_dataset, augmented = ctx.train_dataset, None
    if augment is not None:
        train_dataset, augmented = augmented_train(
            ctx, stage, augment, trainer_kwargs.get("teacher"), args.device
        )
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=ctx.eval_datasets[ctx.task.eval_splits[0]],
        data_collator=collator(ctx),
        processing_class=ctx.tokenizer,
        compute_metrics=trainer_metrics(ctx.task),
        callbacks=[*(callbacks or []), *ctx.callbacks],
        **trainer_kwargs,
    )
    trainer.augment_facts = augmented
    return trainer


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest ``checkpoint-<step>`` in ``folder`` that the Trainer finished writing (its trainer_state.json
    is written last): a kill mid-save, or another process's files, leave an incomplete one."""
    steps = [
        int(path.name.removeprefix("checkpoint-"))
        for path in (folder.glob("checkpoint-*") if folder.is_dir() else [])
        if path.name.removeprefix("checkpoint-").isdigit() and (path / "trainer_state.json").is_file()
    ]
    return str(folder / f"checkpoint-{max(steps)}") if steps else None


def run_training(trainer: Trainer, ctx: StageContext):
    """``trainer.train()``, resuming from the last checkpoint in the stage's work folder when there is one
    (a run interrupted in this stage)."""
    last = last_complete_checkpoint(ctx.work_dir)
    if last is not None:
        logger.info("resuming the stage from %s", Path(last).name)
    result = trainer.train(resume_from_checkpoint=last)
    trained = getattr(trainer, "student", None) or trainer.model
    trained = getattr(trained, "module", trained)  # DDP's wrapper
    if hasattr(trained, "config"):
        trained.config.head_source = trained_on(ctx.task)  # what stages.teachers checks
    return result


def train_facts(trainer: Trainer, result: Any) -> dict[str, Any]:
    """What a stage records of a finished ``trainer.train()``: final loss, steps, the last logged loss terms."""
    logs = [log for log in trainer.state.log_history if any(key.startswith("loss_") for key in log)]
    return {
        "train_loss": result.training_loss,
        "train_steps": result.global_step,
        "processes": trainer.args.world_size,
        "data_parallel": isinstance(trainer.model_wrapped, torch.nn.parallel.DistributedDataParallel),
        "last_loss_terms": {k: v for k, v in (logs[-1] if logs else {}).items() if k.startswith("loss_")},
    } | ({"augment": trainer.augment_facts} if getattr(trainer, "augment_facts", None) else {})


def evaluate(model: torch.nn.Module, ctx: StageContext) -> dict[str, float]:
    """The run's validation metrics for ``model``."""
    batch_size = int(
        ctx.training.get("per_device_eval_batch_size", TRAINING_DEFAULTS["per_device_eval_batch_size"])
    )
    return evaluate_splits(model, ctx.task, ctx.eval_datasets, ctx.tokenizer, batch_size, ctx.progress)
