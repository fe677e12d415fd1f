"""The one way to build a stage's context from a recipe: the run's data and where the stage may write."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from datasets import Dataset
from transformers import PreTrainedTokenizerBase, TrainerCallback

from nlpcompress.glue import Task, load_split, load_task_data
from nlpcompress.recipe import Recipe
from nlpcompress.stages import Model, Stage, StageContext


@dataclass
class RunData:
    """A run's task, tokenizer and tokenized rows; ``load`` reads the same rows under another tokenizer."""

    task: Task
    tokenizer: PreTrainedTokenizerBase
    train: Dataset | None
    evals: dict[str, Dataset]
    load: Callable[[PreTrainedTokenizerBase], tuple[Dataset, dict[str, Dataset]]] | None = None
    rows: Callable[[], Dataset] | None = None  # the train rows as text, untokenized (read on demand)

    def with_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> RunData:
        """The same rows read anew with ``tokenizer`` (a stage changed the vocabulary)."""
        if self.load is None:
            raise ValueError("these rows were given, not loaded: they cannot be read with another tokenizer")
        train, evals = self.load(tokenizer)
        return replace(self, tokenizer=tokenizer, train=train, evals=evals)


def load_run_data(recipe: Recipe, task: Task, tokenizer: PreTrainedTokenizerBase) -> RunData:
    """The recipe's rows of ``task`` (its sample sizes and length), tokenized by ``tokenizer``."""

    def load(tokenizer: PreTrainedTokenizerBase) -> tuple[Dataset, dict[str, Dataset]]:
        return load_task_data(
            task,
            tokenizer,
            recipe.data_dir,
            recipe.max_length,
            recipe.max_train_samples,
            recipe.max_eval_samples,
        )

    def rows() -> Dataset:
        return load_split(task, "train", recipe.data_dir, recipe.max_train_samples)

    train, evals = load(tokenizer)
    return RunData(task, tokenizer, train, evals, load, rows)


def stage_context(
    recipe: Recipe,
    stage: Stage,
    data: RunData,
    folder: Path,
    teacher: Model | None = None,
    progress: bool = True,
    callbacks: Sequence[TrainerCallback] = (),
) -> StageContext:
    """``stage``'s context in a run writing under ``folder`` (scratch in ``work/<stage>``, reports in
    ``artifacts/<stage>``), with the recipe's training settings and seed; ``callbacks`` join every
    Trainer the stage builds."""
    return StageContext(
        task=data.task,
        tokenizer=data.tokenizer,
        train_dataset=data.train,
        eval_datasets=data.evals,
        work_dir=folder / "work" / str(stage.name),
        artifacts_dir=folder / "artifacts" / str(stage.name),
        training=recipe.stage_training(stage),
        seed=recipe.seed,
        teacher=teacher,
        progress=progress,
        load_data=data.load,
        callbacks=tuple(callbacks),
        allow_untrained_teacher=recipe.allow_untrained_teacher,
        train_rows=data.rows,
        max_length=recipe.max_length,
    )
