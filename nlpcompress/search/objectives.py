"""What a search optimises: metrics read from a trial's ``results.json``, their directions, and limits.

Metrics: ``score`` (the task's GLUE score), the task's own metrics (``accuracy``, ``f1``, ...),
``retention`` (score / ``baseline_score``), ``latency_bs1_ms`` (alias ``latency_ms``) and
``latency_bs32_ms`` (CPU, sequence length 128, as ``run`` records them), ``size_mb`` (the saved
model's files) and ``params`` (total parameters). A constraint ``max_<metric>: x`` or
``min_<metric>: x`` makes a trial that misses it infeasible: it is kept in the study (the samplers
learn from it) but never on the Pareto front while a feasible trial exists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nlpcompress.errors import UserError
from nlpcompress.glue import Task, merge_split_metrics
from nlpcompress.measure import BATCH_1, BATCH_32
from nlpcompress.search.settings import SearchSettings
from nlpcompress.task import resolve_task

MAXIMIZE, MINIMIZE = "maximize", "minimize"


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str
    read: Callable[[Mapping[str, Any], float | None], float]  # (results.json content, baseline score)
    quality: bool = False  # the model's task quality: the Trainer's evaluations estimate it during training


_BUILTIN = (
    Metric("score", MAXIMIZE, lambda results, _: float(results["score"]), quality=True),
    Metric("retention", MAXIMIZE, lambda results, baseline: results["score"] / baseline, quality=True),
    Metric("latency_bs1_ms", MINIMIZE, lambda results, _: float(results["latency_ms"][BATCH_1])),
    Metric("latency_bs32_ms", MINIMIZE, lambda results, _: float(results["latency_ms"][BATCH_32])),
    Metric("size_mb", MINIMIZE, lambda results, _: results["size_bytes"] / 1e6),
    Metric("params", MINIMIZE, lambda results, _: float(results["structure"]["params"]["total"])),
)
ALIASES = {"latency_ms": "latency_bs1_ms"}


def task_metric(name: str) -> Metric:
    """A metric ``results.json`` records under ``metrics`` (higher is better for every GLUE metric)."""
    return Metric(name, MAXIMIZE, lambda results, _: float(results["metrics"][name]), quality=True)


def available_metrics(task: Task) -> dict[str, Metric]:
    """Every metric a search on ``task`` may name, by name (aliases included)."""
    names = merge_split_metrics(
        task, {split: dict.fromkeys(task.metric_names, 0.0) for split in task.eval_splits}
    )
    metrics = {metric.name: metric for metric in _BUILTIN} | {name: task_metric(name) for name in names}
    return metrics | {alias: metrics[target] for alias, target in ALIASES.items()}


@dataclass(frozen=True)
class Constraint:
    metric: Metric
    bound: str  # "max" or "min"
    limit: float

    @property
    def key(self) -> str:
        return f"{self.bound}_{self.metric.name}"

    def violation(self, value: float) -> float:
        """How far ``value`` is beyond the limit; <= 0 when the constraint is met (Optuna's convention)."""
        return value - self.limit if self.bound == "max" else self.limit - value


@dataclass(frozen=True)
class Objectives:
    metrics: tuple[Metric, ...]
    directions: tuple[str, ...]
    constraints: tuple[Constraint, ...]
    baseline_score: float | None
    task: Task

    @property
    def names(self) -> list[str]:
        return [metric.name for metric in self.metrics]

    @property
    def maximize(self) -> list[bool]:
        return [direction == MAXIMIZE for direction in self.directions]

    def describe(self) -> str:
        """``accuracy (max), latency_bs1_ms (min)``, with the constraints."""
        text = ", ".join(f"{n} ({d[:3]})" for n, d in zip(self.names, self.directions, strict=True))
        limits = ", ".join(f"{c.key} {c.limit:g}" for c in self.constraints)
        return f"{text}; constraints {limits}" if limits else text

    def measure(self, results: Mapping[str, Any]) -> dict[str, float]:
        """Every metric of ``results`` (a trial's results.json) by name; ``retention`` needs the baseline."""
        metrics = {m.name: m for m in available_metrics(self.task).values()}
        if self.baseline_score is None:
            metrics.pop("retention")
        return {name: metric.read(results, self.baseline_score) for name, metric in metrics.items()}

    def values(self, measured: Mapping[str, float]) -> tuple[float, ...]:
        return tuple(measured[name] for name in self.names)

    def violations(self, measured: Mapping[str, float]) -> list[float]:
        return [c.violation(measured[c.metric.name]) for c in self.constraints]

    def pruning_key(self) -> str | None:
        """The Trainer's evaluation key that tracks the objective while a stage trains (``eval_<metric>``), or
        None where pruning cannot apply: several objectives (Optuna prunes single-objective studies only),
        or one that no evaluation during training estimates (latency, size)."""
        if len(self.metrics) != 1 or not self.metrics[0].quality:
            return None
        name = self.metrics[0].name
        return f"eval_{name if name in self.task.metric_names else self.task.main_metric}"


def _metric(name: str, known: Mapping[str, Metric], where: str, source: str) -> Metric:
    if name not in known:
        raise UserError(f"{source}: {where}: unknown metric {name!r}; allowed: {', '.join(known)}")
    return known[name]


def objectives_from_settings(settings: SearchSettings, task_value: Any, source: str) -> Objectives:
    """The objectives and constraints ``settings`` names, checked against the metrics of the space's task
    (one fixed task, a GLUE name or the user's data block: trials are compared on it)."""
    if not isinstance(task_value, str) and not (isinstance(task_value, dict) and "name" in task_value):
        raise UserError(
            f"{source}: task: must be one fixed task (a name or a data block) in a search space "
            f"(got {task_value!r})"
        )
    task = resolve_task(task_value, source)
    known = available_metrics(task)
    metrics = tuple(_metric(name, known, "search.objectives", source) for name in settings.objectives)
    constraints = []
    for key, limit in settings.constraints.items():
        bound, _, name = key.partition("_")
        if bound not in ("max", "min") or not name:
            raise UserError(
                f"{source}: search.constraints.{key}: must be max_<metric> or min_<metric> "
                f"(e.g. max_latency_ms, max_size_mb, min_retention)"
            )
        constraints.append(
            Constraint(_metric(name, known, f"search.constraints.{key}", source), bound, limit)
        )
    uses = [m.name for m in metrics] + [c.metric.name for c in constraints]
    if "retention" in uses and settings.baseline_score is None:
        raise UserError(
            f"{source}: search.baseline_score: required by retention (the baseline model's score, e.g. 0.8452)"
        )
    directions = tuple(settings.directions or [metric.direction for metric in metrics])
    return Objectives(metrics, directions, tuple(constraints), settings.baseline_score, task)
