"""GLUE metrics and scores (Wang et al. 2019), computed locally with scikit-learn and SciPy.

Metric names follow the Hugging Face ``glue`` metric: ``accuracy``, ``f1``,
``matthews_correlation``, ``pearson``, ``spearmanr``; a task from data may also use ``macro_f1``
(the unweighted mean of the per-class F1). Values are fractions in [0, 1]
(correlations in [-1, 1]), not the percentages of the GLUE leaderboard.

MNLI is evaluated on two splits. :func:`merge_split_metrics` names its metrics after
the split with the ``validation_`` prefix removed: ``accuracy_matched`` and
``accuracy_mismatched``. Its task score is the mean of the two, so MNLI counts as one
task in the GLUE average.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import EvalPrediction

from nlpcompress.errors import UserError
from nlpcompress.glue.tasks import Task, get_task


def _correlation(statistic: Callable, labels: np.ndarray, predictions: np.ndarray) -> float:
    """A correlation, 0.0 when either side is constant (undefined), as sklearn does for Matthews."""
    if np.ptp(labels) == 0 or np.ptp(predictions) == 0:
        return 0.0
    return float(statistic(labels, predictions)[0])


_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda y, p: float(accuracy_score(y, p)),
    "f1": lambda y, p: float(f1_score(y, p, zero_division=0.0)),
    "macro_f1": lambda y, p: float(f1_score(y, p, average="macro", zero_division=0.0)),
    "matthews_correlation": lambda y, p: float(matthews_corrcoef(y, p)),
    "pearson": lambda y, p: _correlation(pearsonr, y, p),
    "spearmanr": lambda y, p: _correlation(spearmanr, y, p),
}


def _predicted_values(task: Task, predictions: np.ndarray) -> np.ndarray:
    """Class ids from logits (N, C), or scores from regression outputs (N,) or (N, 1)."""
    predictions = np.asarray(predictions)
    if task.is_regression:
        if predictions.ndim == 2 and predictions.shape[1] == 1:
            predictions = predictions[:, 0]
        if predictions.ndim != 1:
            raise ValueError(
                f"{task.name}: expected predictions of shape (N,) or (N, 1), got {predictions.shape}"
            )
        return predictions.astype(np.float64)
    if predictions.ndim != 2 or predictions.shape[1] != task.num_labels:
        raise ValueError(
            f"{task.name}: expected logits of shape (N, {task.num_labels}), got {predictions.shape}"
        )
    return predictions.argmax(axis=1)


def compute_metrics(task: Task, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's GLUE metrics for one evaluation split, as plain floats."""
    values = _predicted_values(task, predictions)
    labels = np.asarray(labels, dtype=np.float64 if task.is_regression else np.int64).reshape(-1)
    if len(values) != len(labels):
        raise ValueError(f"{task.name}: {len(values)} predictions but {len(labels)} labels")
    return {name: _METRICS[name](labels, values) for name in task.metric_names}


def _split_suffix(split: str) -> str:
    """``validation_matched`` -> ``matched``: the suffix of a split's metric names."""
    return split.removeprefix("validation_")


def score_keys(task: Task) -> list[str]:
    """The metric names :func:`task_score` averages: per split when a task has several."""
    if len(task.eval_splits) == 1:
        return list(task.metric_names)
    return [f"{name}_{_split_suffix(split)}" for split in task.eval_splits for name in task.metric_names]


def merge_split_metrics(task: Task, per_split: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Join per-split metrics (keyed by ``task.eval_splits``) into one dict.

    A task with one evaluation split keeps its metric names; MNLI's become
    ``<metric>_matched`` and ``<metric>_mismatched``.
    """
    if len(task.eval_splits) == 1:
        return dict(per_split[task.eval_splits[0]])
    return {
        f"{name}_{_split_suffix(split)}": value
        for split in task.eval_splits
        for name, value in per_split[split].items()
    }


def task_score(task: Task, metrics: Mapping[str, float]) -> float:
    """The task's single GLUE score: the unweighted mean of its metrics (Wang et al. 2019).

    MRPC and QQP average accuracy and F1, STS-B Pearson and Spearman, MNLI the matched
    and mismatched accuracy (keys as made by :func:`merge_split_metrics`).
    """
    keys = score_keys(task)
    missing = [key for key in keys if key not in metrics]
    if missing:
        raise UserError(f"{task.name} metrics lack {', '.join(missing)}; expected: {', '.join(keys)}")
    return float(np.mean([metrics[key] for key in keys]))


def glue_average(results: Mapping[str, Mapping[str, float]]) -> float:
    """The GLUE average: the unweighted mean of the task scores of the tasks given.

    ``results`` maps task names (aliases allowed) to metrics as accepted by :func:`task_score`.
    """
    if not results:
        raise UserError("no task results to average; give metrics for at least one GLUE task")
    tasks = {name: get_task(name) for name in results}
    names = [task.name for task in tasks.values()]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UserError(f"results name the same task twice: {', '.join(duplicates)}")
    return float(np.mean([task_score(tasks[name], metrics) for name, metrics in results.items()]))


def trainer_metrics(task: Task) -> Callable[[EvalPrediction], dict[str, float]]:
    """A ``compute_metrics`` function for Hugging Face ``Trainer``.

    When the model returns several outputs, ``EvalPrediction.predictions`` is a tuple
    whose first element holds the logits.
    """

    def compute(eval_prediction: EvalPrediction) -> dict[str, float]:
        predictions = eval_prediction.predictions
        if isinstance(predictions, tuple):
            predictions = predictions[0]
        return compute_metrics(task, predictions, eval_prediction.label_ids)

    return compute
