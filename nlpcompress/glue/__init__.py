"""GLUE (Wang et al. 2019): task definitions, data loading and metrics."""

from nlpcompress.glue.data import data_record, load_split, load_task_data, resolve_data_dir, tokenize
from nlpcompress.glue.metrics import (
    compute_metrics,
    glue_average,
    merge_split_metrics,
    task_score,
    trainer_metrics,
)
from nlpcompress.glue.tasks import TASKS, Task, get_task

__all__ = [
    "TASKS",
    "Task",
    "compute_metrics",
    "data_record",
    "get_task",
    "glue_average",
    "load_split",
    "load_task_data",
    "merge_split_metrics",
    "resolve_data_dir",
    "task_score",
    "tokenize",
    "trainer_metrics",
]
