"""Recipe stages: each module registers its schema (recipe.register_stage) and its runner."""

from nlpcompress.stages import finetune
from nlpcompress.stages.base import RUNNERS, StageContext, StageOutput, register_runner

__all__ = ["RUNNERS", "StageContext", "StageOutput", "finetune", "register_runner"]
