"""The tiny random compact classifier shared by the tests and the torchrun scripts they launch."""

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
