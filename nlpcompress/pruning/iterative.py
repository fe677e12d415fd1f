"""Iterative pruning (Michel et al. 2019, §4.2): prune a fraction of the live units, measure, repeat.

One loop for both faces: ``iterative_prune`` drives it with evaluations between steps (no
training), ``HeadPruningCallback`` at the Trainer's evaluation points while fine-tuning recovers.
The state is plain lists and numbers, so a callback can save it in checkpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from nlpcompress.pruning.units import Importance, gate_units, select_least_important, step_size
from nlpcompress.surgery import Item, Unit

logger = logging.getLogger(__name__)


@dataclass
class IterativePruning:
    """The state of an iterative run towards ``target`` pruned units.

    ``history`` has one entry per step: ``{"step": when, "pruned": total after it, "metric": measured
    after it}``; a step undone because its metric fell below ``metric_floor`` × ``reference`` is
    marked ``"undone": True``, and pruning stops there.
    """

    target: int
    step_fraction: float
    min_keep: int = 1
    metric_floor: float | None = None
    reference: float | None = None
    pruned: list[list[int]] = field(default_factory=list)
    last_step: list[list[int]] = field(default_factory=list)
    first_importance: list[list[float]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False

    def __post_init__(self) -> None:
        if self.metric_floor is not None and self.reference is None:
            raise ValueError("metric_floor needs reference (the metric before pruning)")
        self.done = self.done or self.target == 0

    @property
    def pruned_items(self) -> list[Item]:
        return [(layer, index) for layer, index in self.pruned]

    def step(self, importance: Importance, total: int, at: int) -> list[Item]:
        """Add the next step's least important units (of ``total`` units); returns all pruned so far."""
        if not self.first_importance:
            self.first_importance = [scores.tolist() for scores in importance]
        size = step_size(total - len(self.pruned), self.target - len(self.pruned), self.step_fraction)
        step = select_least_important(importance, size, exclude=self.pruned_items, min_keep=self.min_keep)
        self.last_step = [list(item) for item in step]
        self.pruned = sorted(self.pruned + self.last_step)
        self.history.append({"step": at, "pruned": len(self.pruned)})
        logger.info("step %s: %d pruned (target %d)", at, len(self.pruned), self.target)
        return self.pruned_items

    def record(self, metric: float) -> bool:
        """The metric after the last step; False once pruning is over (target reached, or step undone)."""
        self.history[-1]["metric"] = metric
        if self.metric_floor is not None and metric < self.metric_floor * self.reference:
            logger.info(
                "metric %.4f < %.2f × %.4f: undoing the last %d and stopping",
                metric,
                self.metric_floor,
                self.reference,
                len(self.last_step),
            )
            self.pruned = [item for item in self.pruned if item not in self.last_step]
            self.history[-1]["undone"] = True
            self.last_step = []
            self.done = True
        elif len(self.pruned) >= self.target:
            self.done = True
        return not self.done

    @property
    def stopped_by_floor(self) -> bool:
        return any(entry.get("undone") for entry in self.history)

    def state(self) -> dict[str, Any]:
        return asdict(self)


def iterative_prune(
    model: nn.Module,
    unit: Unit,
    pruning: IterativePruning,
    score_fn: Callable[[list[Item]], Importance],
    metric_fn: Callable[[], float],
) -> IterativePruning:
    """Run ``pruning`` to its end with gates: score, prune a step, measure, until done.

    The model is left gated with ``pruning.pruned`` off.
    """
    total = sum(unit.counts(model))
    index = 0
    while not pruning.done:
        index += 1
        pruned = pruning.step(score_fn(pruning.pruned_items), total, at=index)
        gate_units(model, unit, pruned)
        pruning.record(metric_fn())
    gate_units(model, unit, pruning.pruned_items)
    return pruning
