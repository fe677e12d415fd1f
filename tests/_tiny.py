"""The tiny random compact classifier shared by the tests and the torchrun scripts they launch."""

import json
import subprocess
import sys
from pathlib import Path

import torch

from nlpcompress.compact import CompactBertConfig, CompactBertForSequenceClassification

TINY_FIELDS = dict(
    vocab_size=50,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=32,
    num_labels=2,
    initializer_range=0.3,
)


def tiny_model(dtype: torch.dtype = torch.float32, **overrides) -> CompactBertForSequenceClassification:
    """A seeded 2-layer, 4-head, width-32 compact classifier in eval mode; ``overrides`` change config fields."""
    torch.manual_seed(0)
    model = CompactBertForSequenceClassification(CompactBertConfig(**{**TINY_FIELDS, **overrides}))
    return model.to(dtype).eval()


def logits_without_nlpcompress(folder: Path, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The logits of a saved folder loaded with ``trust_remote_code=True`` in a fresh interpreter that never
    imports nlpcompress (the folder's own modeling files run), run from inside the folder."""
    script = (
        "import sys, json, torch; from transformers import AutoModelForSequenceClassification as A; "
        f"m = A.from_pretrained({str(folder)!r}, trust_remote_code=True).eval(); "
        "assert not any(name.startswith('nlpcompress') for name in sys.modules); "
        f"x = {json.dumps({k: v.tolist() for k, v in inputs.items()})}; "
        "print(json.dumps(m(**{k: torch.tensor(v) for k, v in x.items()}).logits.tolist()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=folder, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return torch.tensor(json.loads(done.stdout))


def users_classifier(folder: Path, tokenizer_dir: Path, id2label: dict[int, str], seed: int = 3) -> Path:
    """A tiny BERT classifier 'fine-tuned elsewhere' (random, seeded): its head names its classes in its own
    order, with the real tokenizer of ``tokenizer_dir``."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=128, id2label=id2label, label2id={v: k for k, v in id2label.items()},
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return folder
