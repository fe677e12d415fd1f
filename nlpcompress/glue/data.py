"""Load and tokenize GLUE splits (Wang et al. 2019) from a local folder or the Hugging Face Hub.

A local folder holds ``<task>/<split>.tsv`` files: UTF-8, one header line, tab-separated,
with the Hugging Face ``glue`` columns (the text fields, ``label``, ``idx``). Fields are
unquoted, as in GLUE: many begin with ``"``, so lines are split on tabs and never parsed
with CSV quoting. Without a folder, the splits come from ``nyu-mll/glue`` on the Hub.
"""

from __future__ import annotations

import logging
import os
from itertools import islice
from pathlib import Path

import datasets
import numpy as np
from datasets import ClassLabel, Dataset, Features, Value
from transformers import PreTrainedTokenizerBase

from nlpcompress.errors import UserError
from nlpcompress.file_digest import labelled_files_digest
from nlpcompress.glue.tasks import Task
from nlpcompress.user_data import load_user_split, user_data_record

logger = logging.getLogger("nlpcompress")

ENV_VAR = "NLPCOMPRESS_GLUE_DIR"
HUB_DATASET = "nyu-mll/glue"
MIN_LENGTH, MAX_LENGTH = 8, 4096
_LAYOUT = "a folder with <task>/train.tsv and <task>/validation.tsv (the shared GLUE layout)"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path | None:
    """The local GLUE folder: ``data_dir``, else ``$NLPCOMPRESS_GLUE_DIR``, else None (use the Hub)."""
    source = ""
    if data_dir is None:
        data_dir = os.environ.get(ENV_VAR) or None
        if data_dir is None:
            return None
        source = f" (from {ENV_VAR})"
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise UserError(f"GLUE data folder '{path}'{source} does not exist; expected {_LAYOUT}")
    return path


def _check_max_samples(value: int | None, name: str = "max_samples") -> None:
    """``value`` must be None (all rows) or a positive whole number."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise UserError(f"{name} must be a positive whole number (or unset for all rows); got {value!r}")


def _check_max_length(max_length: int) -> None:
    """``max_length`` must be a whole number of tokens from 8 to 4096."""
    if (
        isinstance(max_length, bool)
        or not isinstance(max_length, int)
        or not MIN_LENGTH <= max_length <= MAX_LENGTH
    ):
        raise UserError(
            f"max_length must be a whole number from {MIN_LENGTH} to {MAX_LENGTH}; got {max_length!r}"
        )


def _check_split(task: Task, split: str) -> None:
    """Only the train split and the task's evaluation splits have labels."""
    allowed = ("train", *task.eval_splits)
    if split not in allowed:
        raise UserError(f"unknown split {split!r} for {task.name}; allowed: {', '.join(allowed)}")


def _features(task: Task) -> Features:
    """The column types of the Hugging Face ``glue`` dataset for ``task``."""
    label = Value("float32") if task.is_regression else ClassLabel(names=list(task.label_names))
    return Features(
        {**{field: Value("string") for field in task.text_fields}, "label": label, "idx": Value("int32")}
    )


def _parse_label(task: Task, text: str) -> int | float:
    """A float score for regression, else a class id in ``range(task.num_labels)``."""
    if task.is_regression:
        return float(text)
    label = int(text)
    if not 0 <= label < task.num_labels:
        raise ValueError(f"label {label} is not in 0..{task.num_labels - 1}")
    return label


def _read_tsv(task: Task, path: Path, max_samples: int | None) -> Dataset:
    """The first ``max_samples`` rows (all when None) of a GLUE TSV file, fields verbatim."""
    try:
        return _read_rows(task, path, max_samples)
    except UnicodeDecodeError:
        line, column, byte = _first_undecodable(path)
        raise UserError(
            f"{path}:{line}: byte {byte!r} at column {column} is not UTF-8; GLUE files must be UTF-8 text"
        ) from None
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror or error})") from None


def _first_undecodable(path: Path) -> tuple[int, int, bytes]:
    """Line number, 1-based column and value of the first byte that is not UTF-8."""
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as error:
            return number, error.start + 1, raw[error.start : error.start + 1]
    return 0, 0, b""


def _read_rows(task: Task, path: Path, max_samples: int | None) -> Dataset:
    columns = (*task.text_fields, "label", "idx")
    table: dict[str, list] = {column: [] for column in columns}
    with path.open(encoding="utf-8", newline="\n") as file:
        header = tuple(file.readline().rstrip("\n").split("\t"))
        if header != columns:
            raise UserError(
                f"{path}: columns are {', '.join(header)}; expected for {task.name}: {', '.join(columns)}"
            )
        for line_number, line in enumerate(islice(file, max_samples), start=2):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != len(columns):
                raise UserError(
                    f"{path}:{line_number}: {len(fields)} tab-separated fields, expected {len(columns)}"
                )
            try:
                values = [*fields[:-2], _parse_label(task, fields[-2]), int(fields[-1])]
            except ValueError as error:
                raise UserError(f"{path}:{line_number}: bad label or idx: {error}") from error
            for column, value in zip(columns, values, strict=True):
                table[column].append(value)
    if not table["idx"]:
        raise UserError(f"{path}: no rows after the header; a {task.name} split needs at least one example")
    return Dataset.from_dict(table, features=_features(task))


def _load_local(task: Task, split: str, root: Path, max_samples: int | None) -> Dataset:
    """``<root>/<task>/<split>.tsv``; a missing file names the splits that are there."""
    path = root / task.name / f"{split}.tsv"
    if not path.is_file():
        present = sorted(file.stem for file in (root / task.name).glob("*.tsv"))
        raise UserError(
            f"no GLUE file {path}; splits present for {task.name} in {root}: {', '.join(present) or 'none'}"
        )
    return _read_tsv(task, path, max_samples)


def data_record(task: Task, data_dir: str | os.PathLike[str] | None) -> dict[str, str | None]:
    """Where the task's rows come from and, for local files, the SHA-256 of their bytes (train and every
    eval split that is there, by name): a run records it, and a cached run is reused only for the same
    data. Hub data is named by its dataset id (its revision is the Hub's, not recorded here)."""
    if task.data is not None:
        return user_data_record(task)
    root = resolve_data_dir(data_dir)
    if root is None:
        return {"source": f"{HUB_DATASET}/{task.name}", "sha256": None}
    splits = [(split, root / task.name / f"{split}.tsv") for split in ("train", *task.eval_splits)]
    sha256 = labelled_files_digest((split, path) for split, path in splits if path.is_file())
    return {"source": str((root / task.name).resolve()), "sha256": sha256}


def _load_hub(task: Task, split: str, max_samples: int | None) -> Dataset:
    """The split from ``nyu-mll/glue`` on the Hub (or the local Hugging Face cache)."""
    try:
        dataset = datasets.load_dataset(HUB_DATASET, task.hub_name, split=split)
    except Exception as error:
        reason = (str(error).splitlines() or [""])[0][:200]
        raise UserError(
            f"could not load {task.name}/{split} from the Hugging Face Hub ({HUB_DATASET}: "
            f"{type(error).__name__}: {reason}); give a local GLUE folder with --data-dir or {ENV_VAR}"
        ) from error
    if max_samples is not None and max_samples < len(dataset):
        dataset = dataset.select(range(max_samples))
    return dataset


def load_split(
    task: Task,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    max_samples: int | None = None,
) -> Dataset:
    """One labelled split with columns ``*task.text_fields``, ``label``, ``idx``: from GLUE's files or
    the Hub, or, for a task from data, from its own (``data_dir`` is then not used).

    ``max_samples`` keeps the first n rows, as Hugging Face ``run_glue.py`` does, so a
    subset is the same on every run. ``data_dir`` is resolved by :func:`resolve_data_dir`.
    """
    _check_max_samples(max_samples)
    _check_split(task, split)
    if task.data is not None:
        return load_user_split(task, split, max_samples)
    root = resolve_data_dir(data_dir)
    if root is None:
        return _load_hub(task, split, max_samples)
    return _load_local(task, split, root, max_samples)


def tokenize(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, task: Task, max_length: int) -> Dataset:
    """Tokenize the text fields (a pair for two-sentence tasks), truncated to ``max_length``.

    Returns ``input_ids``, ``attention_mask``, ``token_type_ids`` when the tokenizer makes
    them, and ``labels`` (float32 for regression, int64 otherwise). Rows are not padded:
    padding is done per batch by the data collator. The result is kept in memory, so no
    cache file is written next to the data.
    """
    _check_max_length(max_length)
    label_dtype = np.float32 if task.is_regression else np.int64

    def encode(batch: dict[str, list]) -> dict[str, object]:
        texts = [batch[field] for field in task.text_fields]
        encoded = tokenizer(*texts, truncation=True, max_length=max_length)
        return {**encoded, "labels": np.asarray(batch["label"], dtype=label_dtype)}

    encoded = dataset.map(
        encode,
        batched=True,
        remove_columns=dataset.column_names,
        load_from_cache_file=False,
        keep_in_memory=True,
        desc=f"Tokenizing {task.name}",
    )
    full = sum(len(ids) == max_length for ids in encoded["input_ids"])
    if full:  # said once per split, so a too-short max_length is visible
        logger.info(
            "%s: %d of %d rows reach max_length %d tokens (longer ones are truncated there)",
            task.name, full, len(encoded), max_length,
        )  # fmt: skip
    return encoded


def load_task_data(
    task: Task,
    tokenizer: PreTrainedTokenizerBase,
    data_dir: str | os.PathLike[str] | None,
    max_length: int,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    need_train: bool = True,
) -> tuple[Dataset | None, dict[str, Dataset]]:
    """The tokenized train split (None unless ``need_train``) and one tokenized dataset per eval split.

    With ``need_train=False`` a missing train file is fine (QNLI has only validation locally).
    """
    _check_max_length(max_length)
    _check_max_samples(max_train_samples, "max_train_samples")
    _check_max_samples(max_eval_samples, "max_eval_samples")
    root = resolve_data_dir(data_dir)

    def load(split: str, max_samples: int | None) -> Dataset:
        return tokenize(load_split(task, split, root, max_samples), tokenizer, task, max_length)

    train = load("train", max_train_samples) if need_train else None
    return train, {split: load(split, max_eval_samples) for split in task.eval_splits}
