"""nlpcompress: smaller, faster BERT-family models on GLUE, built on the Hugging Face Trainer.

Importing the package registers the compact model with the Auto classes, so
``AutoModelForSequenceClassification.from_pretrained(folder)`` loads any saved nlpcompress model;
``nlpcompress.load(folder)`` returns a classifier of texts on the runtime the folder holds.
"""

from nlpcompress.compact import CompactBertConfig, CompactBertForSequenceClassification, CompactBertModel
from nlpcompress.errors import UserError
from nlpcompress.version import __version__

__all__ = [
    "CompactBertConfig",
    "CompactBertForSequenceClassification",
    "CompactBertModel",
    "UserError",
    "__version__",
    "load",
]


def __getattr__(name: str):
    """``nlpcompress.load`` (``nlpcompress.predict.load``), imported on first use: the predictor needs the
    runtimes' modules, which ``import nlpcompress`` (registering the model class) should not pull in."""
    if name == "load":
        from nlpcompress.predict import load

        return load
    raise AttributeError(f"module 'nlpcompress' has no attribute {name!r}")
