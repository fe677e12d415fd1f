"""The compact model: one encoder implementation for every compressed shape."""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from .configuration_compact_bert import CompactBertConfig
from .modeling_compact_bert import (
    CompactBertForSequenceClassification,
    CompactBertModel,
    CompactSelfAttention,
)

AutoConfig.register(CompactBertConfig.model_type, CompactBertConfig, exist_ok=True)
AutoModel.register(CompactBertConfig, CompactBertModel, exist_ok=True)
AutoModelForSequenceClassification.register(
    CompactBertConfig, CompactBertForSequenceClassification, exist_ok=True
)
# save_pretrained then writes an auto_map and copies the two self-contained modeling files, so a
# saved folder loads with trust_remote_code=True where nlpcompress is not installed.
CompactBertConfig.register_for_auto_class()
CompactBertModel.register_for_auto_class("AutoModel")
CompactBertForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "CompactBertConfig",
    "CompactBertForSequenceClassification",
    "CompactBertModel",
    "CompactSelfAttention",
]
