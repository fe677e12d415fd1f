"""The nine GLUE tasks (Wang et al. 2019, "GLUE: A Multi-Task Benchmark and Analysis
Platform for Natural Language Understanding", ICLR): columns, labels and metrics.

Column names, label order and config names follow the Hugging Face ``nyu-mll/glue``
dataset, so local TSV files and the Hub give the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from nlpcompress.errors import UserError

SINGLE_SENTENCE = ("sentence",)
SENTENCE_PAIR = ("sentence1", "sentence2")
NLI_LABELS = ("entailment", "not_entailment")


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task.

    Attributes:
        name: short lower-case name, also the folder name of the local data.
        text_fields: the text columns fed to the tokenizer (one sentence or a pair).
        num_labels: number of classes; 1 for the regression task STS-B.
        is_regression: True when the label is a float score (STS-B).
        label_names: class names in label-id order (empty for regression).
        metric_names: the metrics GLUE reports for the task (Wang et al. 2019, Table 1).
        main_metric: the metric used to pick the best checkpoint (the first listed).
        eval_splits: the evaluation splits; MNLI has a matched and a mismatched one.
        hub_name: the config name for ``load_dataset("nyu-mll/glue", hub_name)``.
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


def _task(
    name: str,
    text_fields: tuple[str, ...],
    label_names: tuple[str, ...],
    metric_names: tuple[str, ...],
    eval_splits: tuple[str, ...] = ("validation",),
) -> GlueTask:
    """Build a task; a task without label names is a regression task with one output."""
    is_regression = not label_names
    return GlueTask(
        name=name,
        text_fields=text_fields,
        num_labels=1 if is_regression else len(label_names),
        is_regression=is_regression,
        label_names=label_names,
        metric_names=metric_names,
        main_metric=metric_names[0],
        eval_splits=eval_splits,
        hub_name=name,
    )


TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        _task("cola", SINGLE_SENTENCE, ("unacceptable", "acceptable"), ("matthews_correlation",)),
        _task("sst2", SINGLE_SENTENCE, ("negative", "positive"), ("accuracy",)),
        _task("mrpc", SENTENCE_PAIR, ("not_equivalent", "equivalent"), ("accuracy", "f1")),
        _task("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), ("accuracy", "f1")),
        _task("stsb", SENTENCE_PAIR, (), ("pearson", "spearmanr")),
        _task(
            "mnli",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            ("accuracy",),
            eval_splits=("validation_matched", "validation_mismatched"),
        ),
        _task("qnli", ("question", "sentence"), NLI_LABELS, ("accuracy",)),
        _task("rte", SENTENCE_PAIR, NLI_LABELS, ("accuracy",)),
        _task("wnli", SENTENCE_PAIR, ("not_entailment", "entailment"), ("accuracy",)),
    )
}

_ALIASES = {"sst-2": "sst2", "sts-b": "stsb"}


def get_task(name: str) -> GlueTask:
    """Return the task called ``name`` (case-insensitive; ``sst-2`` and ``sts-b`` also work)."""
    key = name.strip().lower()
    task = TASKS.get(_ALIASES.get(key, key))
    if task is None:
        raise UserError(f"unknown task {name!r}; allowed: {', '.join(sorted(TASKS))}")
    return task
