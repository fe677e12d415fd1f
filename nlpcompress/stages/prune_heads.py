"""The `prune_heads` stage: attention-head importance pruning (Michel et al. 2019), removed for real."""

from __future__ import annotations

import json
import math
from typing import Any, Literal

import torch
from pydantic import ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from nlpcompress.compact import CompactBertForSequenceClassification
from nlpcompress.errors import UserError
from nlpcompress.glue import GlueTask, task_score
from nlpcompress.pruning import (
    Head,
    HeadPruningCallback,
    Importance,
    dataset_batches,
    distributed_shard,
    gate_heads,
    head_importance,
    iterative_prune,
    iterative_steps,
    plot_head_importance,
    prunable_count,
    random_importance,
    remove_heads,
    select_heads,
    set_head_gates,
    target_count,
)
from nlpcompress.recipe import StageBase, register_stage
from nlpcompress.stages.base import StageContext, StageOutput, register_runner
from nlpcompress.training import build_trainer, collator, evaluate


def _invalid(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid_value", message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@register_stage
class PruneHeadsStage(StageBase):
    """Score heads, prune to ``target`` (globally ranked), remove them, optionally recover by fine-tuning.

    ``strategy``: ``oneshot`` prunes the least important heads at once; ``iterative`` prunes
    ``step_fraction`` of the live heads, re-scores and repeats (with ``recover``, during fine-tuning,
    at evaluation points) until ``target`` or until the metric falls below ``metric_floor`` × its value
    before pruning; ``random`` is the baseline with the same budget and rules.
    """

    type: Literal["prune_heads"]
    target: float | int = 0.5
    strategy: Literal["oneshot", "iterative", "random"] = "oneshot"
    score: Literal["gradient", "entropy"] = "gradient"
    normalize: bool = True
    step_fraction: float = 0.1
    metric_floor: float | None = None
    score_samples: int = 512
    score_batch_size: int = 32
    allow_empty_layers: bool = False
    keep_per_layer: int = 1
    recover: bool = True
    seed: int | None = None

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: Any) -> Any:
        if _is_int(value):
            if value < 0:
                raise _invalid("a count of heads must be >= 0")
            return value
        if isinstance(value, float) and not isinstance(value, bool):
            if not 0 < value < 1:
                raise _invalid("a fraction of heads must be in (0, 1); use an integer for a count")
            return value
        raise _invalid("must be a fraction in (0, 1) or a whole number of heads")

    @field_validator("step_fraction", mode="before")
    @classmethod
    def _step_fraction(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise _invalid("must be a fraction in (0, 1]")
        return value

    @field_validator("metric_floor", mode="before")
    @classmethod
    def _metric_floor(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise _invalid("must be a fraction in (0, 1] of the metric before pruning (e.g. 0.9), or null")
        if info.data.get("strategy") != "iterative":
            raise _invalid("applies to strategy 'iterative' only")
        return value

    @field_validator("score_samples", "score_batch_size", mode="before")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if not _is_int(value) or value <= 0:
            raise _invalid("must be a positive integer")
        return value

    @field_validator("keep_per_layer", mode="before")
    @classmethod
    def _keep_per_layer(cls, value: Any, info: ValidationInfo) -> Any:
        if not _is_int(value) or value < 0:
            raise _invalid("must be an integer >= 0")
        if value == 0 and not info.data.get("allow_empty_layers"):
            raise _invalid("0 lets layers lose every head; set allow_empty_layers: true to allow that")
        return value

    @field_validator("seed", mode="before")
    @classmethod
    def _seed(cls, value: Any) -> Any:
        if value is not None and (not _is_int(value) or value < 0):
            raise _invalid("must be an integer >= 0 or null (the recipe seed)")
        return value

    @property
    def min_keep(self) -> int:
        return 0 if self.allow_empty_layers else self.keep_per_layer


def first_split_metric(task: GlueTask, metrics: dict[str, float]) -> float:
    """The main metric on the first evaluation split (what the Trainer reports as ``eval_<metric>``)."""
    if len(task.eval_splits) == 1:
        return metrics[task.main_metric]
    return metrics[f"{task.main_metric}_{task.eval_splits[0].removeprefix('validation_')}"]


def _score_fn(stage: PruneHeadsStage, model: CompactBertForSequenceClassification, ctx: StageContext):
    """Importance of the live heads on the first ``score_samples`` training rows (this rank's share)."""
    rank, world = distributed_shard()
    rows = min(stage.score_samples, len(ctx.train_dataset))
    total = math.ceil(len(range(rank, rows, world)) / stage.score_batch_size)

    def score(pruned: list[Head]) -> Importance:
        batches = dataset_batches(
            ctx.train_dataset, collator(ctx), stage.score_batch_size, rank, world, limit=stage.score_samples
        )
        return head_importance(
            model,
            batches,
            stage.score,
            stage.normalize,
            pruned,
            progress=ctx.progress and rank == 0,
            total=total,
        )

    return score


def _prune_without_training(
    stage: PruneHeadsStage, model, ctx: StageContext, count: int, reference: float
) -> tuple[list[Head], Importance, list[dict]]:
    """One-shot, random, or iterative pruning with evaluation (no fine-tuning) between steps."""
    score = _score_fn(stage, model, ctx)
    if stage.strategy == "iterative":
        result = iterative_prune(
            model,
            score,
            lambda: task_score(ctx.task, evaluate(model, ctx)),
            count,
            stage.step_fraction,
            stage.min_keep,
            stage.metric_floor,
        )
        return result.pruned, result.first_importance, result.history
    if stage.strategy == "random":
        seed = ctx.recipe.seed if stage.seed is None else stage.seed
        importance = random_importance(model.config.heads_per_layer, seed)
    else:
        importance = score([])
    return (
        select_heads(importance, count, min_keep=stage.min_keep),
        importance,
        [{"pruned": 0, "metric": reference}],
    )


def _prune_while_training(
    stage: PruneHeadsStage, model, ctx: StageContext, count: int, before: dict[str, float]
) -> tuple[list[Head], Importance, list[dict], dict[str, Any]]:
    """Iterative pruning at the Trainer's evaluation points, recovering in between (HeadPruningCallback)."""
    callback = HeadPruningCallback(
        target_count=count,
        step_fraction=stage.step_fraction,
        metric=ctx.task.main_metric,
        reference_metric=first_split_metric(ctx.task, before),
        metric_floor=stage.metric_floor,
        score=stage.score,
        normalize=stage.normalize,
        min_keep=stage.min_keep,
        score_samples=stage.score_samples,
        score_batch_size=stage.score_batch_size,
    )
    overrides: dict[str, Any] = {}
    if "eval_strategy" not in ctx.recipe.stage_training(stage):
        # The first step runs at train begin; one evaluation after each step leaves the last interval to recover.
        steps = iterative_steps(sum(model.config.heads_per_layer), count, stage.step_fraction)
        overrides = {"eval_strategy": "steps", "eval_steps": 1 / (steps + 1)}
    trainer = build_trainer(ctx, stage, model, callbacks=[callback], args_overrides=overrides)
    result = trainer.train()
    live = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, HeadPruningCallback))
    pruned = [(layer, head) for layer, head in live.pruned]
    importance = [torch.tensor(scores) for scores in live.first_importance]
    return (
        pruned,
        importance,
        live.history,
        {"train_loss": result.training_loss, "train_steps": result.global_step},
    )


def _save_artifacts(
    stage: PruneHeadsStage, ctx: StageContext, importance: Importance, pruned: list[Head]
) -> list[str]:
    """The heat map (when matplotlib is installed) and the scores as JSON, in the run's artifacts folder."""
    ctx.artifacts_dir.mkdir(parents=True, exist_ok=True)
    report = ctx.artifacts_dir / f"{stage.name}-head-importance.json"
    scores = [[float(value) for value in layer] for layer in importance]
    report.write_text(json.dumps({"importance": scores, "pruned": [list(head) for head in pruned]}, indent=1))
    scores_of = "random scores" if stage.strategy == "random" else f"{stage.score} importance"
    title = f"{stage.name}: {scores_of}, {len(pruned)} heads pruned ({stage.strategy})"
    plot = plot_head_importance(
        importance, pruned, ctx.artifacts_dir / f"{stage.name}-head-importance.png", title
    )
    return [path.name for path in (report, plot) if path is not None]


@register_runner("prune_heads")
def run_prune_heads(
    stage: PruneHeadsStage, model: CompactBertForSequenceClassification, ctx: StageContext
) -> StageOutput:
    heads_before = list(model.config.heads_per_layer)
    try:
        count = target_count(stage.target, sum(heads_before))
        possible = prunable_count(heads_before, stage.min_keep)
        if count > possible:
            raise ValueError(
                f"target {stage.target} means {count} heads, but only {possible} of {sum(heads_before)} can go "
                f"while every layer keeps {stage.min_keep} (set allow_empty_layers: true or lower the target)"
            )
    except ValueError as err:
        raise UserError(f"stage {stage.name!r}: {err}") from None
    if ctx.train_dataset is None:
        raise UserError(f"stage {stage.name!r} scores heads on training rows, but no train split is loaded")
    before = evaluate(model, ctx)
    info: dict[str, Any] = {
        "heads_before": heads_before,
        "metric_before_pruning": task_score(ctx.task, before),
    }
    if stage.strategy == "iterative" and stage.recover:
        pruned, importance, history, train = _prune_while_training(stage, model, ctx, count, before)
        info.update(train)
    else:
        pruned, importance, history = _prune_without_training(
            stage, model, ctx, count, info["metric_before_pruning"]
        )
        gate_heads(model, pruned)
        before_recovery = evaluate(model, ctx)
        info["metric_before_recovery"] = task_score(ctx.task, before_recovery)
    remove_heads(model, pruned)
    set_head_gates(model, None)
    if stage.recover and stage.strategy != "iterative":
        result = build_trainer(ctx, stage, model).train()
        info.update(train_loss=result.training_loss, train_steps=result.global_step)
    metrics = evaluate(model, ctx) if stage.recover else before_recovery
    info.update(
        heads_per_layer=list(model.config.heads_per_layer),
        pruned=[list(head) for head in pruned],
        history=history,
        artifacts=_save_artifacts(stage, ctx, importance, pruned),
    )
    return StageOutput(model=model, metrics=metrics, info=info)
