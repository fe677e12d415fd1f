"""The stage contract: a stage takes the current model and returns the next one with its metrics."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from nlpcompress.compact import CompactBertForSequenceClassification
from nlpcompress.glue import GlueTask
from nlpcompress.recipe import Recipe, StageBase


@dataclass
class StageContext:
    """What a stage may use; it must not write outside ``work_dir`` and ``artifacts_dir``."""

    recipe: Recipe
    task: GlueTask
    tokenizer: PreTrainedTokenizerBase
    train_dataset: Dataset | None
    eval_datasets: dict[str, Dataset]
    work_dir: Path  # scratch: Trainer output_dir, checkpoints; deleted after a successful run
    artifacts_dir: Path  # saved with the run's model (plots, JSON reports)
    progress: bool = True


@dataclass
class StageOutput:
    model: CompactBertForSequenceClassification
    metrics: dict[str, float]  # validation metrics of the returned model
    info: dict[str, Any] = field(default_factory=dict)  # stage facts for results.json


StageRunner = Callable[[StageBase, CompactBertForSequenceClassification, StageContext], StageOutput]
RUNNERS: dict[str, StageRunner] = {}


def register_runner(stage_type: str) -> Callable[[StageRunner], StageRunner]:
    """Decorator: the function that executes recipe stages of ``stage_type``."""

    def add(runner: StageRunner) -> StageRunner:
        RUNNERS[stage_type] = runner
        return runner

    return add
