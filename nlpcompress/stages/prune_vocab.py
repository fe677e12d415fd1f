"""The `prune_vocab` stage: keep the vocabulary the task's training data uses (TextPruner's vocabulary pruning)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from nlpcompress.errors import ConfigError, UserError
from nlpcompress.parametrize import clone
from nlpcompress.schema import config_keys
from nlpcompress.stages.registry import Model, Stage, StageContext, StageOutput, register_stage
from nlpcompress.stages.training import evaluate
from nlpcompress.vocab import (
    coverage,
    kept_token_ids,
    map_dropped_to_nearest,
    prune_embeddings,
    prune_tokenizer,
)

DROPPED_TOKENS = ("unk", "nearest")


@dataclass
class VocabularyConfig:
    """``keep_tokens``: tokens kept besides those of the training rows and the special tokens.
    ``dropped_tokens``: what a token outside the kept vocabulary reads as: ``unk`` (the tokenizer is pruned
    too; a word WordPiece cannot build from kept pieces becomes ``[UNK]``) or ``nearest`` (the tokenizer stays whole and the model reads the token
    as the kept token of the same kind nearest by cosine of its input embeddings)."""

    keep_tokens: list[str] = field(default_factory=list)
    dropped_tokens: str = "unk"

    def __post_init__(self) -> None:
        if not all(isinstance(token, str) and token for token in self.keep_tokens):
            raise ConfigError("keep_tokens", self.keep_tokens, "must be a list of non-empty token strings")
        if self.dropped_tokens not in DROPPED_TOKENS:
            raise ConfigError("dropped_tokens", self.dropped_tokens, f"allowed: {', '.join(DROPPED_TOKENS)}")


@register_stage
class PruneVocabStage(config_keys(VocabularyConfig), Stage):
    """Vocabulary pruning: the word embeddings and the tokenizer keep the tokens of the training data."""

    type: Literal["prune_vocab"]
    config_class: ClassVar[type] = VocabularyConfig
    accepts: ClassVar[frozenset[str]] = frozenset({"transforms", "sparse-stored", "factorized", "shared"})

    def run(self, model: Model, ctx: StageContext) -> StageOutput:
        config: VocabularyConfig = self.config()
        if ctx.load_data is None:
            raise UserError(
                f"stage {self.name!r} re-reads the run's data with the new tokenizer; run it in a recipe"
            )
        if model.config.token_map_size:
            raise UserError(
                f"stage {self.name!r}: the vocabulary is already pruned (dropped_tokens: nearest); prune it once"
            )
        kept = kept_token_ids(ctx.tokenizer, [ctx.train_dataset], config.keep_tokens)
        before = model.config.vocab_size
        info = {
            "vocab_size_before": before,
            "vocab_size_after": len(kept),
            "dropped_tokens": config.dropped_tokens,
            "eval_token_coverage": {
                split: round(coverage(data, kept, ctx.tokenizer), 4)
                for split, data in ctx.eval_datasets.items()
            },
        }
        if config.dropped_tokens == "nearest":  # same tokenizer, data and teacher: only the table shrinks
            map_dropped_to_nearest(model, ctx.tokenizer, kept)
            return StageOutput(model=model, metrics=evaluate(model, ctx), info=info)
        tokenizer = prune_tokenizer(ctx.tokenizer, kept)
        prune_embeddings(model, kept)
        teacher = None
        if ctx.teacher is not None:  # later stages feed it the new ids
            teacher = clone(ctx.teacher)
            prune_embeddings(teacher, kept)
        train, evals = ctx.load_data(tokenizer)
        pruned_ctx = dataclasses.replace(ctx, tokenizer=tokenizer, train_dataset=train, eval_datasets=evals)
        return StageOutput(
            model=model,
            metrics=evaluate(model, pruned_ctx),
            info=info,
            teacher=teacher,
            tokenizer=tokenizer,
        )
