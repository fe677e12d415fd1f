"""The Trainer face of iterative head pruning: prune at evaluation points while fine-tuning recovers."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState

from nlpcompress.distributed import dataset_batches, distributed_shard
from nlpcompress.pruning.config import HeadPruningConfig
from nlpcompress.pruning.heads import head_importance
from nlpcompress.pruning.iterative import IterativePruning
from nlpcompress.pruning.units import gate_units
from nlpcompress.surgery import HEADS

logger = logging.getLogger(__name__)


class HeadPruningCallback(TrainerCallback, ExportableState):
    """Iterative head pruning (Michel et al. 2019, §4.2) interleaved with recovery fine-tuning.

    At the start of training, then at every evaluation until the target: score the live heads
    (``config.score`` on the first ``config.score_samples`` training rows, all-reduced across
    processes) and gate off ``config.step_fraction`` of them, least important first, ranked across
    layers. When an evaluation's ``eval_<metric>`` falls below ``metric_floor`` × ``reference_metric``
    (the metric before pruning), the last step is undone and pruning stops. Heads are gated (ξ = 0), not
    removed, while the optimizer holds the parameters: afterwards, ``set_gates(model, HEADS, None)`` and
    ``remove_units(model, HEADS, callback.pruned)``. The gates are attached when the Trainer is built, so
    a checkpoint (which holds them) loads back into the same structure.

    The state (``IterativePruning``) is an ``ExportableState`` saved in every checkpoint; on
    ``resume_from_checkpoint`` it is read back from the trainer state (whether or not
    ``restore_callback_states_from_checkpoint`` is set) and the gates are re-applied, so a resumed run
    prunes exactly the heads an uninterrupted one does.
    """

    def __init__(
        self,
        config: HeadPruningConfig | dict,
        metric: str = "accuracy",
        reference_metric: float | None = None,
        pruning: dict | None = None,
    ):
        self.config = HeadPruningConfig(**config) if isinstance(config, dict) else config
        if self.config.metric_floor is not None and reference_metric is None:
            raise ValueError("metric_floor needs reference_metric (the metric before pruning)")
        self.metric = metric
        self.reference_metric = reference_metric
        self.pruning = IterativePruning(**pruning) if pruning is not None else None

    @property
    def pruned(self) -> list[tuple[int, int]]:
        return self.pruning.pruned_items if self.pruning else []

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.pruning.history if self.pruning else []

    def state(self) -> dict:
        """Constructor arguments that rebuild this callback as it is now (the Trainer's ExportableState)."""
        return {
            "args": {
                "config": self.config.as_dict(),
                "metric": self.metric,
                "reference_metric": self.reference_metric,
                "pruning": self.pruning.state() if self.pruning else None,
            },
            "attributes": {},
        }

    def _restore(self, state: TrainerState) -> None:
        """Take the pruning state from a checkpoint's trainer state, if the Trainer has not rebuilt us from it."""
        saved = state.stateful_callbacks.get(type(self).__name__)
        if isinstance(saved, list):
            saved = saved[0]
        pruning = (saved or {}).get("args", {}).get("pruning")
        if pruning is not None:
            self.pruning = IterativePruning(**pruning)

    def on_init_end(self, args, state, control, model: nn.Module | None = None, **kwargs) -> None:
        """Gates go on before the Trainer may load a checkpoint, whose keys include them."""
        gate_units(model, HEADS, ())

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
        if self.pruning is not None:
            gate_units(model, HEADS, self.pruning.pruned_items)
            return
        self.pruning = IterativePruning(
            target=self.config.target_count(HEADS.counts(model)),
            step_fraction=self.config.step_fraction,
            min_keep=self.config.min_keep,
            metric_floor=self.config.metric_floor,
            reference=self.reference_metric,
        )
        if not self.pruning.done:
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
        if self.pruning is None or self.pruning.done:
            return
        key = f"eval_{self.metric}"
        if key not in (metrics or {}):
            raise KeyError(
                f"HeadPruningCallback watches {key!r}; the evaluation gave {sorted(metrics or {})}"
            )
        if self.pruning.record(float(metrics[key])):
            self._prune_step(model, train_dataloader, state)
        else:
            gate_units(model, HEADS, self.pruning.pruned_items)

    def on_train_end(self, args, state, control, **kwargs) -> None:
        if self.pruning is not None and not self.pruning.done:
            logger.warning(
                "training ended with %d of %d heads pruned; evaluate more often (eval_steps) to reach the target",
                len(self.pruning.pruned),
                self.pruning.target,
            )

    def _prune_step(self, model: nn.Module, train_dataloader, state: TrainerState) -> None:
        dataset = getattr(train_dataloader, "dataset", None)
        if dataset is None or not hasattr(dataset, "__getitem__"):
            raise ValueError(
                "HeadPruningCallback scores on the training rows; it needs a map-style train dataset"
            )
        rank, world = distributed_shard()
        batches = dataset_batches(
            dataset,
            train_dataloader.collate_fn,
            self.config.score_batch_size,
            rank,
            world,
            limit=self.config.score_samples,
        )
        importance = head_importance(
            model,
            batches,
            self.config.score,
            self.config.normalize,
            pruned=self.pruning.pruned_items,
            progress=state.is_world_process_zero,
        )
        pruned = self.pruning.step(importance, sum(HEADS.counts(model)), at=state.global_step)
        gate_units(model, HEADS, pruned)
