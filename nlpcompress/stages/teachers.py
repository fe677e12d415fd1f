"""Where a teacher's classification head came from, checked before a stage distils from it.

A model records its head in ``config.head_source``: ``new`` when transformers initialised the head at load
(a pretrained encoder), ``task:<name>`` once a stage trained it on that task; a checkpoint trained
elsewhere has no record, its labels were checked at load. A stage refuses a teacher whose head is new or
was trained for another task (the recipe's ``allow_untrained_teacher: true`` overrides that, and
results.json says so); a teacher that scores no better than the majority class (or, for a regression,
than the mean) on a sample of the task's dev rows is named in a warning and in the stage's record.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from datasets import Dataset

from nlpcompress.errors import UserError
from nlpcompress.evaluation import predict_logits
from nlpcompress.glue import Task
from nlpcompress.models import NEW_HEAD
from nlpcompress.stages.registry import Model, Stage, StageContext

logger = logging.getLogger("nlpcompress")

SAMPLE_ROWS = 256


def trained_on(task: Task) -> str:
    """The ``head_source`` of a head a stage trained on ``task``."""
    return f"task:{task.name}"


def head_source(model: Model) -> str | None:
    return getattr(model.config, "head_source", None)


def head_problem(model: Model, task: Task) -> str | None:
    """Why ``model``'s head cannot teach ``task``, or None."""
    source = head_source(model)
    if source == NEW_HEAD:
        return "its classification head was initialised when it was loaded and never trained"
    if source is not None and source != trained_on(task):
        return f"its classification head was trained for {source.removeprefix('task:')!r}, not {task.name!r}"
    return None


def check_teacher(stage: Stage, teacher: Model, ctx: StageContext, which: str) -> dict[str, Any]:
    """Refuse ``teacher`` (``which`` says which model it is) when its head is new or another task's, unless
    the recipe allows it; then score it on a sample of dev rows. The facts for the stage's record."""
    problem = head_problem(teacher, ctx.task)
    facts: dict[str, Any] = {"head": head_source(teacher) or "trained elsewhere (labels checked)"}
    if problem is not None:
        if not ctx.allow_untrained_teacher:
            raise UserError(
                f"stage {stage.name!r} distils from {which}, but {problem}: fine-tune it on {ctx.task.name} "
                "first (a finetune stage before this one, or a teacher that is fine-tuned), or set "
                "allow_untrained_teacher: true in the recipe to distil from it anyway"
            )
        facts["allowed_by"] = "allow_untrained_teacher"
        logger.warning(
            "stage %s: %s; distilling from it anyway (allow_untrained_teacher)", stage.name, problem
        )
    facts |= sample_score(teacher, ctx)
    if "warning" in facts:
        logger.warning("stage %s: the teacher %s", stage.name, facts["warning"])
    return facts


def sample_score(teacher: Model, ctx: StageContext) -> dict[str, Any]:
    """The teacher against the trivial predictor on the first dev rows: accuracy vs the majority class's
    share, or Pearson's r vs the mean's 0 for a regression; a ``warning`` when it is no better."""
    rows = _sample(ctx.eval_datasets[ctx.task.eval_splits[0]])
    logits, labels = predict_logits(teacher, rows, ctx.tokenizer, progress=False)
    if ctx.task.is_regression:
        predictions = logits.reshape(-1)
        r = float(np.corrcoef(predictions, labels)[0, 1]) if predictions.std() > 0 else 0.0
        facts = {"sample_rows": len(rows), "pearson": round(r, 4), "mean_predictor_pearson": 0.0}
        better = r > 0
    else:
        accuracy = float((logits.argmax(-1) == labels).mean())
        majority = float(np.bincount(labels.astype(int)).max() / len(labels))
        facts = {
            "sample_rows": len(rows),
            "accuracy": round(accuracy, 4),
            "majority_class": round(majority, 4),
        }
        better = accuracy > majority
    if not better:
        trivial = "the mean" if ctx.task.is_regression else "the majority class"
        facts["warning"] = f"scores no better than {trivial} on {len(rows)} dev rows: is it fine-tuned?"
    return facts


def _sample(dataset: Dataset) -> Dataset:
    return dataset.select(range(min(SAMPLE_ROWS, len(dataset))))
