"""Recipe stages: the contract and registry (``registry``), one module per built-in stage type.

``builtin`` imports every built-in stage module, which registers it; the recipe loader imports it.
This package's own import stays light (the registry only), so a stage module can import the
training helpers that themselves use the stage contract.
"""

from nlpcompress.stages.registry import (
    STAGES,
    Model,
    Stage,
    StageContext,
    StageOutput,
    parse_stage,
    register_stage,
)

__all__ = ["STAGES", "Model", "Stage", "StageContext", "StageOutput", "parse_stage", "register_stage"]
