"""GLUE metrics computed through a predictor (any backend), as ``training.evaluate_splits`` computes them
for a PyTorch model."""

from collections.abc import Mapping

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from nlpcompress.evaluation import collect_logits, metrics_by_split
from nlpcompress.glue import Task
from nlpcompress.runtime.backends import Predictor


def evaluate_predictor(
    predictor: Predictor,
    task: Task,
    datasets: Mapping[str, Dataset],
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, float]:
    """The task's metrics on every evaluation split, from batches padded as the PyTorch evaluation pads them."""
    desc = f"Evaluating ({predictor.backend})"
    return metrics_by_split(
        task,
        datasets,
        lambda data: collect_logits(
            lambda batch: predictor(**batch), data, tokenizer, batch_size, progress, desc
        ),
    )
