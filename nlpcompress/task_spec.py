"""What a task is: its text columns, its classes (or a regression score), its metrics and evaluation
splits, and, for a task from the user's own data, where that data comes from.

GLUE's nine tasks are fixed instances (``nlpcompress.glue.tasks``); a recipe's ``task:`` block makes
one from data (``nlpcompress.user_data``). Everything downstream (loading, training, metrics, the
card) reads this one description.
"""

from __future__ import annotations

from dataclasses import dataclass

# a task block's ``metric:`` and the metric names it computes (its score is their mean)
METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "accuracy": ("accuracy",),
    "macro_f1": ("macro_f1",),
    "f1": ("f1",),
    "matthews": ("matthews_correlation",),
    "pearson_spearman": ("pearson", "spearmanr"),
}


@dataclass(frozen=True)
class UserData:
    """Where a task from data comes from: ``source`` (the files, folder or Hub id, as written), the Hub
    ``config``, the ``label`` column, the fraction of train carved off as validation when the data has
    none (None: it has one), and the recipe's block as JSON (to read the rows again)."""

    source: str
    config: str | None
    label: str
    carved_validation: float | None
    block_json: str


@dataclass(frozen=True)
class Task:
    """One classification or regression task.

    Attributes:
        name: short lower-case name, also the folder name of GLUE's local data.
        text_fields: the text columns fed to the tokenizer (one sentence or a pair).
        num_labels: number of classes; 1 for a regression task (STS-B).
        is_regression: True when the label is a float score.
        label_names: class names in label-id order (empty for regression).
        metric_names: the metrics reported (GLUE's per task, Wang et al. 2019, Table 1).
        main_metric: the metric used to pick the best checkpoint (the first listed).
        eval_splits: the evaluation splits; MNLI has a matched and a mismatched one.
        hub_name: GLUE's config name for ``load_dataset("nyu-mll/glue", hub_name)``.
        data: for a task from the user's data, where it comes from (None for GLUE).
    """

    name: str
    text_fields: tuple[str, ...]
    num_labels: int
    is_regression: bool
    label_names: tuple[str, ...]
    metric_names: tuple[str, ...]
    main_metric: str
    eval_splits: tuple[str, ...]
    hub_name: str
    data: UserData | None = None

    @classmethod
    def of(
        cls,
        name: str,
        text_fields: tuple[str, ...],
        label_names: tuple[str, ...],
        metric_names: tuple[str, ...],
        eval_splits: tuple[str, ...] = ("validation",),
        data: UserData | None = None,
    ) -> Task:
        """A task; one without label names is a regression task with one output."""
        is_regression = not label_names
        return cls(
            name=name,
            text_fields=text_fields,
            num_labels=1 if is_regression else len(label_names),
            is_regression=is_regression,
            label_names=label_names,
            metric_names=metric_names,
            main_metric=metric_names[0],
            eval_splits=eval_splits,
            hub_name=name,
            data=data,
        )
