"""The Trainer face of head pruning: prune at evaluation points while fine-tuning recovers."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState

from nlpcompress.pruning.heads import (
    SCORES,
    dataset_batches,
    distributed_shard,
    gate_heads,
    head_counts,
    head_importance,
    select_heads,
    step_size,
)

logger = logging.getLogger(__name__)


class HeadPruningCallback(TrainerCallback, ExportableState):
    """Iterative head pruning (Michel et al. 2019, §4.2) interleaved with recovery fine-tuning.

    At the start of training, then at every evaluation until ``target_count`` heads are off: score
    the live heads (:func:`head_importance` on the first ``score_samples`` training rows, all-reduced
    across processes) and gate off ``step_fraction`` of them, least important first, ranked across
    layers, keeping ``min_keep`` heads per layer. When an evaluation's ``eval_<metric>`` falls below
    ``metric_floor`` × ``reference_metric`` (the metric before pruning), the last step is undone and
    pruning stops. Heads are gated (ξ = 0), not removed, while the optimizer holds the parameters:
    after training, ``remove_heads(model, callback.pruned)``.

    The state (heads pruned so far, the last step, history, first scores) is an ``ExportableState``
    saved in every checkpoint; on ``resume_from_checkpoint`` it is read back from the trainer state
    (whether or not ``restore_callback_states_from_checkpoint`` is set) and the gates are re-applied,
    so a resumed run prunes exactly the heads an uninterrupted one does.
    """

    def __init__(
        self,
        target_count: int,
        step_fraction: float = 0.1,
        metric: str = "accuracy",
        reference_metric: float | None = None,
        metric_floor: float | None = None,
        score: str = "gradient",
        normalize: bool = True,
        min_keep: int = 1,
        score_samples: int = 512,
        score_batch_size: int = 32,
    ):
        if target_count < 0:
            raise ValueError(f"target_count must be >= 0; got {target_count}")
        if not 0 < step_fraction <= 1:
            raise ValueError(f"step_fraction must be in (0, 1]; got {step_fraction}")
        if metric_floor is not None and reference_metric is None:
            raise ValueError("metric_floor needs reference_metric (the metric before pruning)")
        if score not in SCORES:
            raise ValueError(f"unknown importance score {score!r}; allowed: {', '.join(SCORES)}")
        if score_samples <= 0 or score_batch_size <= 0 or min_keep < 0:
            raise ValueError("score_samples and score_batch_size must be positive, min_keep >= 0")
        self.target_count = target_count
        self.step_fraction = step_fraction
        self.metric = metric
        self.reference_metric = reference_metric
        self.metric_floor = metric_floor
        self.score = score
        self.normalize = normalize
        self.min_keep = min_keep
        self.score_samples = score_samples
        self.score_batch_size = score_batch_size
        self.pruned: list[list[int]] = []
        self.last_step: list[list[int]] = []
        self.first_importance: list[list[float]] = []
        self.history: list[dict[str, Any]] = []
        self.started = False
        self.done = False

    _ARGS = (
        "target_count",
        "step_fraction",
        "metric",
        "reference_metric",
        "metric_floor",
        "score",
        "normalize",
        "min_keep",
        "score_samples",
        "score_batch_size",
    )
    _ATTRIBUTES = ("pruned", "last_step", "first_importance", "history", "started", "done")

    def state(self) -> dict:
        return {
            "args": {name: getattr(self, name) for name in self._ARGS},
            "attributes": {name: getattr(self, name) for name in self._ATTRIBUTES},
        }

    def _restore(self, state: TrainerState) -> None:
        saved = state.stateful_callbacks.get(type(self).__name__)
        if isinstance(saved, list):
            saved = saved[0]
        for name, value in (saved or {}).get("attributes", {}).items():
            setattr(self, name, value)

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        train_dataloader=None,
        **kwargs,
    ) -> None:
        self._restore(state)
        if self.started:
            gate_heads(model, self.pruned)
            return
        self.started = True
        self.done = self.target_count == 0
        if not self.done:
            self._prune_step(model, train_dataloader, state)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        model: nn.Module | None = None,
        train_dataloader=None,
        **kwargs,
    ) -> None:
        if self.done or not self.started:
            return
        key = f"eval_{self.metric}"
        if key not in (metrics or {}):
            raise KeyError(
                f"HeadPruningCallback watches {key!r}; the evaluation gave {sorted(metrics or {})}"
            )
        value = float(metrics[key])
        self.history[-1]["metric"] = value
        if self.metric_floor is not None and value < self.metric_floor * self.reference_metric:
            logger.info(
                "eval %s %.4f < %.2f × %.4f: undoing the last %d pruned heads and stopping",
                self.metric,
                value,
                self.metric_floor,
                self.reference_metric,
                len(self.last_step),
            )
            self.pruned = [head for head in self.pruned if head not in self.last_step]
            self.last_step = []
            self.history.append({"step": state.global_step, "pruned": len(self.pruned), "undone": True})
            gate_heads(model, self.pruned)
            self.done = True
            return
        if len(self.pruned) >= self.target_count:
            self.done = True
            return
        self._prune_step(model, train_dataloader, state)

    def on_train_end(self, args, state, control, **kwargs) -> None:
        if len(self.pruned) < self.target_count and not self.done:
            logger.warning(
                "training ended with %d of %d heads pruned; evaluate more often (eval_steps) to reach the target",
                len(self.pruned),
                self.target_count,
            )

    def _prune_step(self, model: nn.Module, train_dataloader, state: TrainerState) -> None:
        dataset = getattr(train_dataloader, "dataset", None)
        if dataset is None or not hasattr(dataset, "__getitem__"):
            raise ValueError(
                "HeadPruningCallback scores on the training rows; it needs a map-style train dataset"
            )
        rank, world = distributed_shard()
        batches = dataset_batches(
            dataset, train_dataloader.collate_fn, self.score_batch_size, rank, world, limit=self.score_samples
        )
        importance = head_importance(
            model,
            batches,
            self.score,
            self.normalize,
            pruned=self.pruned,
            progress=state.is_world_process_zero,
        )
        if not self.first_importance:
            self.first_importance = [scores.tolist() for scores in importance]
        alive = sum(head_counts(model)) - len(self.pruned)
        size = step_size(alive, self.target_count - len(self.pruned), self.step_fraction)
        step = select_heads(importance, size, exclude=self.pruned, min_keep=self.min_keep)
        self.last_step = [list(head) for head in step]
        self.pruned = sorted(self.pruned + self.last_step)
        self.history.append({"step": state.global_step, "pruned": len(self.pruned)})
        gate_heads(model, self.pruned)
        logger.info(
            "step %d: %d heads pruned (target %d)", state.global_step, len(self.pruned), self.target_count
        )
