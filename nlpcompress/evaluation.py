"""Evaluation on GLUE splits: logits of any predictor over a dataset, and the task's metrics per split.

Generic (a model, a task, datasets, a tokenizer): the stages, the CLI's ``eval``, the runtime backends and
the benchmarks use it.
"""

from collections.abc import Callable, Mapping

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from nlpcompress.glue import Task, compute_metrics, merge_split_metrics


def collect_logits(
    predict: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int = 64,
    progress: bool = True,
    desc: str = "Evaluating",
) -> tuple[np.ndarray, np.ndarray]:
    """``predict(batch)`` over ``dataset`` in batches padded by the tokenizer's collator: logits and labels."""
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=DataCollatorWithPadding(tokenizer))
    logits, labels = [], []
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        labels.append(batch.pop("labels"))
        logits.append(predict(batch).float().cpu())
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module,
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels over ``dataset`` (model in eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        return collect_logits(
            lambda batch: model(**{k: v.to(device) for k, v in batch.items()}).logits,
            dataset,
            tokenizer,
            batch_size,
            progress,
        )
    finally:
        model.train(was_training)


def metrics_by_split(
    task: Task,
    datasets: Mapping[str, Dataset],
    logits_and_labels: Callable[[Dataset], tuple[np.ndarray, np.ndarray]],
) -> dict[str, float]:
    """The task's GLUE metrics on every evaluation split (MNLI: `<metric>_matched/_mismatched`)."""
    per_split = {split: compute_metrics(task, *logits_and_labels(data)) for split, data in datasets.items()}
    return merge_split_metrics(task, per_split)


def evaluate_splits(
    model: torch.nn.Module,
    task: Task,
    datasets: Mapping[str, Dataset],
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, float]:
    """The task's GLUE metrics for a PyTorch model on every evaluation split."""
    return metrics_by_split(
        task, datasets, lambda data: predict_logits(model, data, tokenizer, batch_size, progress)
    )
