"""Head importance under torchrun: each rank scores its share of the rows; rank 0 saves the result.

Run: torchrun --standalone --nproc_per_node 2 tests/_dist_head_importance.py OUT.pt
The tiny model and rows come from ``build()``, which the test also uses for the one-process run.
"""

import sys

import torch
import torch.distributed as dist
from _tiny import tiny_model

from nlpcompress.compact import CompactBertForSequenceClassification
from nlpcompress.distributed import dataset_batches, distributed_shard
from nlpcompress.pruning import head_importance

BATCH_SIZE = 3


def build() -> tuple[CompactBertForSequenceClassification, list[dict], object]:
    """A tiny random compact model, 14 labelled rows of different lengths, and a padding collate."""
    model = tiny_model()
    generator = torch.Generator().manual_seed(1)
    rows = []
    for index in range(14):
        length = 4 + index % 5
        rows.append(
            {"input_ids": torch.randint(1, 50, (length,), generator=generator).tolist(), "labels": index % 2}
        )

    def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(row["input_ids"]) for row in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for i, row in enumerate(batch):
            ids[i, : len(row["input_ids"])] = torch.tensor(row["input_ids"])
            mask[i, : len(row["input_ids"])] = 1
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": torch.tensor([r["labels"] for r in batch]),
        }

    return model, rows, collate


def main(out: str) -> None:
    dist.init_process_group("gloo")
    model, rows, collate = build()
    rank, world = distributed_shard()
    batches = dataset_batches(rows, collate, BATCH_SIZE, rank, world)
    importance = head_importance(model, batches, "gradient", normalize=True)
    if rank == 0:
        torch.save({"importance": importance, "world_size": world}, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
