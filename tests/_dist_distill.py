"""Run by tests/test_distill.py under ``torchrun --nproc_per_node 2`` (gloo, CPU): a few distillation
steps with tiny models; rank 0 writes a JSON report to argv[1]."""

import json
import math
import sys
import tempfile

import torch
import torch.distributed as dist
from datasets import Dataset
from transformers import BertTokenizer, DataCollatorWithPadding, TrainingArguments

from nlpcompress.compact import CompactBertConfig, CompactBertForSequenceClassification
from nlpcompress.distill import DistillationConfig, DistillationTrainer, fresh_student, student_from_teacher
from nlpcompress.distributed import finish

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(45)]


def teacher_model() -> CompactBertForSequenceClassification:
    torch.manual_seed(0)
    config = CompactBertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=4, num_attention_heads=4, intermediate_size=32,
        max_position_embeddings=32, num_labels=2,
    )  # fmt: skip
    return CompactBertForSequenceClassification(config)


def run(student, teacher, config: DistillationConfig, output_dir: str) -> dict:
    torch.manual_seed(1)
    ids = torch.randint(5, 50, (64, 8))
    data = Dataset.from_dict(
        {
            "input_ids": ids.tolist(),
            "attention_mask": [[1] * 8] * 64,
            "labels": (ids[:, 0] > 27).long().tolist(),
        }
    )
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(VOCAB)})
    args = TrainingArguments(
        output_dir=output_dir, report_to="none", save_strategy="no", max_steps=3, logging_steps=1,
        per_device_train_batch_size=8, learning_rate=1e-3, disable_tqdm=True,
    )  # fmt: skip
    teacher_before = [p.detach().clone() for p in teacher.parameters()]
    student_before = [p.detach().clone() for p in student.parameters()]
    trainer = DistillationTrainer(
        model=student, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer, teacher=teacher, distillation=config,
    )  # fmt: skip
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    terms = sorted({k for log in logs for k in log if k.startswith("loss_")})
    checksum = torch.stack([p.detach().double().sum() for p in trainer.model.parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    return {
        "world_size": dist.get_world_size(),
        "logged_terms": terms,
        "losses_finite": bool(logs) and all(math.isfinite(log[k]) for log in logs for k in ("loss", *terms)),
        "student_changed": any(
            not torch.equal(a, b) for a, b in zip(student_before, student.parameters(), strict=True)
        ),
        "teacher_changed": any(
            not torch.equal(a, b) for a, b in zip(teacher_before, teacher.parameters(), strict=True)
        ),
        "ranks_agree": all(torch.allclose(g, gathered[0]) for g in gathered),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        teacher = teacher_model()
        report = {
            "distilbert": run(student_from_teacher(teacher, [1, 3]), teacher, DistillationConfig(), tmp),
            "tinybert-intermediate": run(
                fresh_student(teacher, num_layers=2, hidden_size=8),
                teacher_model(),
                DistillationConfig(method="tinybert", phase="intermediate"),
                tmp,
            ),
        }
    if dist.get_rank() == 0:
        with open(sys.argv[1], "w") as file:
            json.dump(report, file)
    finish()  # a gloo group left open aborted a rank at exit once on a loaded CI machine


if __name__ == "__main__":
    main()
