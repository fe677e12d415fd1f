"""Recipe stages: each module registers its schema (recipe.register_stage) and its runner."""

from nlpcompress.stages import (
    distill,  # noqa: F401  (registers the distill stage)
    finetune,
    prune_heads,  # noqa: F401  (registers the prune_heads stage)
)
from nlpcompress.stages.base import RUNNERS, StageContext, StageOutput, register_runner

__all__ = ["RUNNERS", "StageContext", "StageOutput", "finetune", "register_runner"]
