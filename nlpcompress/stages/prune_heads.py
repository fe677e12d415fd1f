"""The `prune_heads` stage: attention-head importance pruning (Michel et al. 2019), removed for real."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch

from nlpcompress.distributed import dataset_batches, distributed_shard, is_main
from nlpcompress.errors import UserError
from nlpcompress.glue import Task, task_score
from nlpcompress.pruning import (
    HEADS,
    NEURONS,
    HeadPruningCallback,
    HeadPruningConfig,
    Importance,
    Item,
    IterativePruning,
    gate_units,
    gradient_importance,
    head_importance,
    iterative_prune,
    iterative_steps,
    normalize_per_layer,
    plot_head_importance,
    random_importance,
    remove_units,
    select_least_important,
    set_gates,
)
from nlpcompress.schema import config_keys
from nlpcompress.stages.recovery import RecoveringStage
from nlpcompress.stages.registry import Model, StageContext, StageOutput, register_stage
from nlpcompress.stages.training import collator, evaluate, run_training, train_facts


@register_stage
class PruneHeadsStage(config_keys(HeadPruningConfig), RecoveringStage):
    """Score heads (and FFN neurons) by importance (Michel et al. 2019), prune the least important ranked
    across layers, remove them, optionally recover."""

    type: Literal["prune_heads"]
    config_class: ClassVar[type] = HeadPruningConfig
    accepts: ClassVar[frozenset[str]] = frozenset({"transforms"})
    prepares: ClassVar[tuple[str, ...]] = ("densify",)

    def run(self, model: Model, ctx: StageContext) -> StageOutput:
        config: HeadPruningConfig = self.config()
        recovers = self.recovery_config().train
        count = config.target_count(HEADS.counts(model))
        neuron_count = config.neuron_count(NEURONS.counts(model))
        if ctx.train_dataset is None:
            raise UserError(
                f"stage {self.name!r} scores heads on training rows, but no train split is loaded"
            )
        before = evaluate(model, ctx)
        info: dict[str, Any] = {
            "heads_before": HEADS.counts(model),
            "ffn_widths_before": NEURONS.counts(model),
            "metric_before_pruning": task_score(ctx.task, before),
        }
        neurons: list[Item] = []
        neuron_importance: Importance = []
        if config.strategy == "iterative" and recovers:
            pruned, importance, history, facts = self._prune_while_training(config, model, ctx, count, before)
            info.update(facts)
        else:
            pruned, importance, history = self._prune_without_training(
                config, model, ctx, count, info["metric_before_pruning"]
            )
            if neuron_count:
                neurons, neuron_importance = self._select_neurons(config, model, ctx, neuron_count)
                gate_units(model, NEURONS, neurons)
            gate_units(model, HEADS, pruned)
            before_recovery = evaluate(model, ctx)
            info["metric_before_recovery"] = task_score(ctx.task, before_recovery)
        for unit, items in ((HEADS, pruned), (NEURONS, neurons)):
            set_gates(model, unit, None)
            remove_units(model, unit, items)
        if recovers and config.strategy != "iterative":
            info.update(self.recover(model, ctx))
        metrics = evaluate(model, ctx) if recovers else before_recovery
        info.update(
            heads_per_layer=HEADS.counts(model),
            ffn_widths=NEURONS.counts(model),
            pruned_neurons=len(neurons),
            pruned=[list(head) for head in pruned],
            history=history,
            artifacts=(
                self._save_artifacts(config, ctx, importance, pruned, neuron_importance, neurons)
                if is_main()
                else []
            ),
        )
        return StageOutput(model=model, metrics=metrics, info=info)

    def _score_fn(self, config: HeadPruningConfig, model: Model, ctx: StageContext) -> Callable:
        """Importance of the live heads on the first ``score_samples`` training rows (this rank's share)."""
        rank, world = distributed_shard()
        rows = min(config.score_samples, len(ctx.train_dataset))
        total = math.ceil(len(range(rank, rows, world)) / config.score_batch_size)

        def score(pruned: list[Item]) -> Importance:
            progress = ctx.progress and rank == 0
            batches = _score_batches(config, ctx)
            return head_importance(model, batches, config.score, config.normalize, pruned, progress, total)

        return score

    def _select_neurons(
        self, config: HeadPruningConfig, model: Model, ctx: StageContext, count: int
    ) -> tuple[list[Item], Importance]:
        """The ``count`` least important FFN neurons (gradient importance of their gates, or random scores),
        and the scores."""
        if config.strategy == "random":
            seed = (ctx.seed if config.seed is None else config.seed) + 1
            importance = random_importance(NEURONS.counts(model), seed)
        else:
            progress = ctx.progress and distributed_shard()[0] == 0
            importance = gradient_importance(model, _score_batches(config, ctx), NEURONS, progress=progress)
            importance = normalize_per_layer(importance) if config.normalize else importance
        return select_least_important(importance, count, min_keep=config.min_keep), importance

    def _prune_without_training(
        self, config: HeadPruningConfig, model: Model, ctx: StageContext, count: int, reference: float
    ) -> tuple[list[Item], Importance, list[dict]]:
        """One-shot, random, or iterative pruning with evaluation (no fine-tuning) between steps."""
        score = self._score_fn(config, model, ctx)
        if config.strategy == "iterative":
            pruning = IterativePruning(
                target=count,
                step_fraction=config.step_fraction,
                min_keep=config.min_keep,
                metric_floor=config.metric_floor,
                reference=reference,
            )
            iterative_prune(model, HEADS, pruning, score, lambda: task_score(ctx.task, evaluate(model, ctx)))
            return pruning.pruned_items, _tensors(pruning.first_importance), pruning.history
        if config.strategy == "random":
            importance = random_importance(
                HEADS.counts(model), ctx.seed if config.seed is None else config.seed
            )
        else:
            importance = score([])
        pruned = select_least_important(importance, count, min_keep=config.min_keep)
        return pruned, importance, [{"step": 1, "pruned": len(pruned)}]

    def _prune_while_training(
        self, config: HeadPruningConfig, model: Model, ctx: StageContext, count: int, before: dict[str, float]
    ) -> tuple[list[Item], Importance, list[dict], dict[str, Any]]:
        """Iterative pruning at the Trainer's evaluation points, recovering in between (HeadPruningCallback)."""
        callback = HeadPruningCallback(
            config, metric=ctx.task.main_metric, reference_metric=_first_split_metric(ctx.task, before)
        )
        overrides: dict[str, Any] = {}
        if "eval_strategy" not in self.recovery_context(ctx).training:
            # The first step runs at train begin; one evaluation after each step leaves the last interval to recover.
            steps = iterative_steps(sum(HEADS.counts(model)), count, config.step_fraction)
            overrides = {"eval_strategy": "steps", "eval_steps": 1 / (steps + 1)}
        trainer = self.recovery_trainer(model, ctx, callbacks=[callback], args_overrides=overrides)
        result = run_training(trainer, ctx)
        live = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, HeadPruningCallback))
        return (
            live.pruned,
            _tensors(live.pruning.first_importance),
            live.history,
            train_facts(trainer, result) | {"recovery": self.recovery_config().as_dict()},
        )

    def _save_artifacts(
        self,
        config: HeadPruningConfig,
        ctx: StageContext,
        importance: Importance,
        pruned: list[Item],
        neuron_importance: Importance,
        neurons: list[Item],
    ) -> list[str]:
        """The heat map (when matplotlib is installed) and the scores as JSON, in the run's artifacts folder."""
        ctx.artifacts_dir.mkdir(parents=True, exist_ok=True)
        report = ctx.artifacts_dir / f"{self.name}-head-importance.json"
        scores = {
            "importance": [[float(value) for value in layer] for layer in importance],
            "pruned": [list(head) for head in pruned],
        }
        if neurons:
            scores["neuron_importance"] = [[float(value) for value in layer] for layer in neuron_importance]
            scores["pruned_neurons"] = [list(neuron) for neuron in neurons]
        report.write_text(json.dumps(scores, indent=1))
        scores_of = "random scores" if config.strategy == "random" else f"{config.score} importance"
        title = f"{self.name}: {scores_of}, {len(pruned)} heads pruned ({config.strategy})"
        plot = plot_head_importance(
            importance, pruned, ctx.artifacts_dir / f"{self.name}-head-importance.png", title
        )
        return [path.name for path in (report, plot) if path is not None]


def _score_batches(config: HeadPruningConfig, ctx: StageContext):
    """This process's share of the first ``score_samples`` training rows, in batches."""
    rank, world = distributed_shard()
    return dataset_batches(
        ctx.train_dataset, collator(ctx), config.score_batch_size, rank, world, limit=config.score_samples
    )


def _tensors(scores: list[list[float]]) -> Importance:
    return [torch.tensor(layer) for layer in scores]


def _first_split_metric(task: Task, metrics: dict[str, float]) -> float:
    """The main metric on the first evaluation split (what the Trainer reports as ``eval_<metric>``)."""
    if len(task.eval_splits) == 1:
        return metrics[task.main_metric]
    return metrics[f"{task.main_metric}_{task.eval_splits[0].removeprefix('validation_')}"]
