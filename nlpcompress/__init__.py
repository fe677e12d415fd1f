"""nlpcompress: smaller, faster BERT-family models on GLUE, built on the Hugging Face Trainer.

Importing the package registers the compact model with the Auto classes, so
``AutoModelForSequenceClassification.from_pretrained(folder)`` loads any saved nlpcompress model.
"""

from nlpcompress.compact import CompactBertConfig, CompactBertForSequenceClassification, CompactBertModel
from nlpcompress.errors import UserError

__version__ = "0.1.0"

__all__ = [
    "CompactBertConfig",
    "CompactBertForSequenceClassification",
    "CompactBertModel",
    "UserError",
    "__version__",
]
