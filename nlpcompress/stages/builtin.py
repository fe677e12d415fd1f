"""Importing this module registers every built-in stage type (one module each)."""

from nlpcompress.stages import distill, factorize, finetune, movement, prune_heads, prune_vocab, share_layers  # noqa: F401  (each registers its stage)
