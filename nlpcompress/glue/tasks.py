"""The nine GLUE tasks (Wang et al. 2019, "GLUE: A Multi-Task Benchmark and Analysis
Platform for Natural Language Understanding", ICLR): columns, labels and metrics.

Column names, label order and config names follow the Hugging Face ``nyu-mll/glue``
dataset, so local TSV files and the Hub give the same rows.
"""

from __future__ import annotations

from nlpcompress.errors import UserError
from nlpcompress.task_spec import Task

SINGLE_SENTENCE = ("sentence",)
SENTENCE_PAIR = ("sentence1", "sentence2")
NLI_LABELS = ("entailment", "not_entailment")


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task.of("cola", SINGLE_SENTENCE, ("unacceptable", "acceptable"), ("matthews_correlation",)),
        Task.of("sst2", SINGLE_SENTENCE, ("negative", "positive"), ("accuracy",)),
        Task.of("mrpc", SENTENCE_PAIR, ("not_equivalent", "equivalent"), ("accuracy", "f1")),
        Task.of("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), ("accuracy", "f1")),
        Task.of("stsb", SENTENCE_PAIR, (), ("pearson", "spearmanr")),
        Task.of(
            "mnli",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            ("accuracy",),
            eval_splits=("validation_matched", "validation_mismatched"),
        ),
        Task.of("qnli", ("question", "sentence"), NLI_LABELS, ("accuracy",)),
        Task.of("rte", SENTENCE_PAIR, NLI_LABELS, ("accuracy",)),
        Task.of("wnli", SENTENCE_PAIR, ("not_entailment", "entailment"), ("accuracy",)),
    )
}

_ALIASES = {"sst-2": "sst2", "sts-b": "stsb"}


def get_task(name: str) -> Task:
    """Return the task called ``name`` (case-insensitive; ``sst-2`` and ``sts-b`` also work)."""
    key = name.strip().lower()
    task = TASKS.get(_ALIASES.get(key, key))
    if task is None:
        raise UserError(f"unknown task {name!r}; allowed: {', '.join(sorted(TASKS))}")
    return task
