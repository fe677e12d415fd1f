"""Importing this module registers every built-in stage type (one module each)."""

from nlpcompress.stages import (  # noqa: F401  (each registers its stage)
    distill,
    evaluate,
    factorize,
    finetune,
    movement,
    nm_sparsity,
    prune_heads,
    prune_vocab,
    quantize,
    share_layers,
)
