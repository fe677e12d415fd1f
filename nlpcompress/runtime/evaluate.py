"""GLUE metrics computed through a predictor (any backend), as ``training.evaluate_splits`` computes them
for a PyTorch model."""

from collections.abc import Mapping

import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from nlpcompress.glue import GlueTask, compute_metrics, merge_split_metrics
from nlpcompress.runtime.backends import Predictor


def evaluate_predictor(
    predictor: Predictor,
    task: GlueTask,
    datasets: Mapping[str, Dataset],
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, float]:
    """The task's metrics on every evaluation split, from batches padded as the PyTorch evaluation pads them."""
    per_split = {}
    for split, dataset in datasets.items():
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=DataCollatorWithPadding(tokenizer))
        logits, labels = [], []
        for batch in tqdm(
            loader, desc=f"Evaluating ({predictor.backend})", disable=not progress, leave=False
        ):
            labels.append(batch.pop("labels"))
            logits.append(predictor(**batch))
        per_split[split] = compute_metrics(task, torch.cat(logits).numpy(), torch.cat(labels).numpy())
    return merge_split_metrics(task, per_split)
