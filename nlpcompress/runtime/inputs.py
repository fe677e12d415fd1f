"""What the runtime feeds a classifier: its input names, and padded batches of task examples (or of
deterministic random tokens when no task data is at hand) for verifying and calibrating exports."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nlpcompress.errors import UserError
from nlpcompress.glue import Task, load_split, resolve_data_dir, tokenize
from nlpcompress.models import load_tokenizer
from nlpcompress.task import folder_task

RANDOM_SEED = 0


@dataclass(frozen=True)
class Batches:
    """Padded int64 batches keyed by input name, and where they came from (for reports)."""

    batches: list[dict[str, np.ndarray]]
    source: str


def input_names(config) -> list[str]:
    """The graph inputs: token ids, the attention mask, and token types where the model has them."""
    return ["input_ids", "attention_mask", *(["token_type_ids"] if config.type_vocab_size > 0 else [])]


def _fit(batch: dict[str, np.ndarray], config) -> dict[str, np.ndarray]:
    """Only the model's inputs, int64; zero token types where the tokenizer makes none."""
    fitted = {name: np.asarray(batch[name], dtype=np.int64) for name in batch if name in input_names(config)}
    if "token_type_ids" in input_names(config) and "token_type_ids" not in fitted:
        fitted["token_type_ids"] = np.zeros_like(fitted["input_ids"])
    return fitted


def task_batches(
    folder: str | Path,
    config,
    task: Task,
    split: str,
    data_dir,
    count: int,
    batch_size: int,
    max_length: int,
) -> Batches:
    """The first ``count`` examples of a task split, tokenized by the folder's tokenizer, right-padded per batch."""
    if split == "validation":
        split = task.eval_splits[0]
    tokenizer = load_tokenizer(str(folder))
    rows = tokenize(load_split(task, split, data_dir, count), tokenizer, task, max_length).remove_columns(
        "labels"
    )
    examples = [dict(row) for row in rows]
    batches = [
        _fit(tokenizer.pad(examples[start : start + batch_size], return_tensors="np"), config)
        for start in range(0, len(examples), batch_size)
    ]
    return Batches(batches, f"{len(examples)} {task.name} {split} examples")


def random_batches(config, count: int, batch_size: int, max_length: int) -> Batches:
    """Deterministic random token ids of varied lengths (a quarter of ``max_length`` up to all of it),
    right-padded with the pad token: in each batch of two rows or more, the first is full and the last half."""
    rng = np.random.default_rng(RANDOM_SEED)
    length = min(max_length, config.max_position_embeddings)
    low, shortest = min(1000, config.vocab_size - 1), max(2, length // 4)
    batches = []
    for start in range(0, count, batch_size):
        rows = min(batch_size, count - start)
        lengths = rng.integers(shortest, length + 1, size=rows)
        lengths[0], lengths[-1] = length, max(shortest, length // 2) if rows > 1 else length
        mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
        ids = rng.integers(low, config.vocab_size, size=(rows, length)) * mask + (1 - mask) * (
            config.pad_token_id or 0
        )
        batches.append(_fit({"input_ids": ids, "attention_mask": mask}, config))
    return Batches(batches, f"{count} random token sequences of {shortest} to {length} tokens")


def example_batches(
    folder: str | Path,
    config,
    task: Task | None,
    split: str,
    data_dir,
    count: int,
    batch_size: int,
    max_length: int,
) -> Batches:
    """Task examples when the task is known (``task``, else the folder's run) and its data is at hand (the
    user's own, or a local GLUE folder given or in $NLPCOMPRESS_GLUE_DIR), random tokens otherwise."""
    task = task or folder_task(folder)
    if task is None:
        return random_batches(config, count, batch_size, max_length)
    if task.data is not None:
        return task_batches(folder, config, task, split, None, count, batch_size, max_length)
    root = resolve_data_dir(data_dir)
    if root is None:
        return random_batches(config, count, batch_size, max_length)
    if not (root / task.name).is_dir():
        raise UserError(
            f"no {task.name} folder in the GLUE data folder {root}; give --data-dir with <task>/*.tsv"
        )
    return task_batches(folder, config, task, split, root, count, batch_size, max_length)
