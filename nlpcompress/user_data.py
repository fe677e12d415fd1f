"""A task from the user's own labelled data: CSV, TSV, JSON Lines or Parquet files, a folder saved by
``datasets.save_to_disk``, or a Hub dataset, read with ``datasets``.

A recipe's ``task:`` is a GLUE name or a block::

    task:
      name: tickets
      data: {train: data/tickets-train.csv, validation: data/tickets-dev.csv}   # or a folder, or a Hub id
      text: [subject, body]      # one column, or a pair
      label: category            # class names or ids; floats make it a regression task
      metric: macro_f1           # accuracy | macro_f1 | f1 | matthews | pearson_spearman

Class names and their order come from ``labels:``, else from the data (a ``ClassLabel`` column's names,
else the distinct values, sorted); they become the model's ``id2label``. Without a validation split,
one is carved from train (``validation_fraction``, seed ``CARVE_SEED``) and the run says so.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from pydantic import Discriminator, Tag, ValidationError, field_validator

from nlpcompress.errors import UserError
from nlpcompress.schema import NonEmptyStr, OptionalStr, Schema, check, describe_error
from nlpcompress.task_spec import METRIC_NAMES, Task, UserData

logger = logging.getLogger("nlpcompress")

CARVE_SEED = 0
SPLITS = ("train", "validation")
FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
Slug = Annotated[
    str,
    check(
        lambda v: isinstance(v, str) and re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", v) is not None,
        "must be a lower-case name of letters, digits, '.', '_' or '-' (used in folder names)",
    ),
]
Fraction = Annotated[
    float,
    check(
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 0.5,
        "must be a fraction in (0, 0.5]",
    ),
]


def _data_file(value: object) -> bool:
    return value is None or (isinstance(value, str) and Path(value).suffix.lower() in FORMATS)


DataFile = Annotated[str | None, check(_data_file, f"must be a file ending in one of {', '.join(FORMATS)}")]


class DataFiles(Schema):
    """Local files, one per split (``.csv``, ``.tsv``, ``.json``/``.jsonl``, ``.parquet``)."""

    train: Annotated[DataFile, check(lambda v: v is not None, "must name the training file")]
    validation: DataFile = None


class TaskBlock(Schema):
    """A recipe's ``task:`` when it is the user's own data (see the module docstring)."""

    name: Slug
    # files; or a folder saved by save_to_disk, or a Hub dataset id
    data: Annotated[
        Annotated[DataFiles, Tag("files")] | Annotated[NonEmptyStr, Tag("folder or Hub id")],
        Discriminator(lambda v: "files" if isinstance(v, dict | DataFiles) else "folder or Hub id"),
    ]
    config: OptionalStr = None  # the Hub dataset's configuration
    text: NonEmptyStr | list[NonEmptyStr]
    label: NonEmptyStr
    metric: Literal[tuple(METRIC_NAMES)] | None = None
    labels: list[NonEmptyStr] | None = None
    validation_fraction: Fraction = 0.1

    @field_validator("text")
    @classmethod
    def _one_or_two_columns(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not 1 <= len(value) <= 2:
            raise ValueError(f"must be one column or a pair of columns (got {len(value)})")
        return value

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (len(value) < 2 or len(set(value)) != len(value)):
            raise ValueError("must list at least two distinct class names")
        return value


def parse_task_block(data: object, source: str) -> TaskBlock:
    """Validate a ``task:`` block; errors are one line prefixed with ``source: task.``."""
    try:
        return TaskBlock.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{source}: {'; '.join(f'task.{describe_error(e)}' for e in exc.errors())}") from None


def _read(block: TaskBlock) -> DatasetDict:
    """The block's data as a DatasetDict (train, and validation when it has one), read once per process."""
    return _read_once(block.model_dump_json())


@functools.cache
def _read_once(block_json: str) -> DatasetDict:
    block = TaskBlock.model_validate_json(block_json)
    if isinstance(block.data, DataFiles):
        files = {split: getattr(block.data, split) for split in SPLITS if getattr(block.data, split)}
        for split, file in files.items():
            if not Path(file).expanduser().is_file():
                raise UserError(f"task {block.name}: the {split} file {file!r} does not exist")
        suffixes = {Path(file).suffix.lower() for file in files.values()}
        if len({FORMATS[suffix] for suffix in suffixes}) != 1 or len(suffixes & {".csv", ".tsv"}) > 1:
            raise UserError(
                f"task {block.name}: the splits' files must have one format (got {sorted(suffixes)})"
            )
        suffix = suffixes.pop()
        options = {"delimiter": "\t", "quoting": 3} if suffix == ".tsv" else {}  # 3: csv.QUOTE_NONE
        paths = {split: str(Path(file).expanduser().resolve()) for split, file in files.items()}
        return _load(FORMATS[suffix], block.name, data_files=paths, **options)
    folder = Path(block.data).expanduser()
    if folder.is_dir():
        try:
            loaded = datasets.load_from_disk(str(folder))
        except FileNotFoundError as error:
            raise UserError(
                f"task {block.name}: {block.data!r} is a folder but not one saved by datasets' save_to_disk "
                f"({str(error).splitlines()[0]})"
            ) from None
        return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
    if folder.suffix.lower() in FORMATS or ("/" in block.data and block.data.startswith((".", "/", "~"))):
        raise UserError(f"task {block.name}: {block.data!r} does not exist")
    return _load(block.data, block.name, name=block.config)


def _load(path: str, task: str, **options: Any) -> DatasetDict:
    try:
        return datasets.load_dataset(path, **options)
    except (ConnectionError, OSError) as error:
        raise UserError(
            f"task {task}: cannot load {path!r} ({str(error).splitlines()[0]}); a Hub dataset needs the "
            "network or the local Hugging Face cache (HF_DATASETS_OFFLINE=1 reads only the cache)"
        ) from None
    except (ValueError, datasets.exceptions.DatasetNotFoundError) as error:
        raise UserError(f"task {task}: cannot read {path!r}: {str(error).splitlines()[0]}") from None


def _class_names(block: TaskBlock, train: Dataset) -> tuple[str, ...]:
    """Class names in id order ((): a regression task)."""
    feature = train.features[block.label]
    if isinstance(feature, ClassLabel):
        names = tuple(feature.names)
        if block.labels is not None and set(block.labels) != set(names):
            raise UserError(
                f"task {block.name}: labels {block.labels} are not the data's classes {list(names)}"
            )
        return tuple(block.labels) if block.labels is not None else names
    values = train.unique(block.label)
    if all(isinstance(v, float) for v in values) and any(not float(v).is_integer() for v in values):
        if block.labels is not None:
            raise UserError(
                f"task {block.name}: label column {block.label!r} holds scores; leave out labels:"
            )
        return ()
    if block.labels is not None:
        return tuple(block.labels)
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return tuple(str(int(v)) for v in sorted(values))
    return tuple(sorted(str(v) for v in values))


def _check_columns(block: TaskBlock, split: str, data: Dataset) -> None:
    reserved = [column for column in block_text(block) if column in ("label", "idx")]
    if (reserved and block.label != "label") or "idx" in reserved:
        raise UserError(f"task {block.name}: a text column may not be called 'label' or 'idx'; rename it")
    wanted = [*block_text(block), block.label]
    missing = [column for column in wanted if column not in data.column_names]
    if missing:
        raise UserError(
            f"task {block.name}: the {split} split has no column {', '.join(map(repr, missing))}; "
            f"its columns: {', '.join(data.column_names)}"
        )


def block_text(block: TaskBlock) -> tuple[str, ...]:
    return (block.text,) if isinstance(block.text, str) else tuple(block.text)


def default_metric(classes: tuple[str, ...]) -> str:
    return "pearson_spearman" if not classes else "accuracy"


def task_from_block(block: TaskBlock) -> Task:
    """The task the block describes: its columns, classes (from the data unless listed), metric."""
    raw = _read(block)
    if "train" not in raw:
        raise UserError(f"task {block.name}: the data has no train split (splits: {', '.join(raw)})")
    for split in raw:
        if split in SPLITS:
            _check_columns(block, split, raw[split])
    classes = _class_names(block, raw["train"])
    metric = block.metric or default_metric(classes)
    if classes and metric == "pearson_spearman":
        raise UserError(
            f"task {block.name}: metric pearson_spearman is for float labels; {block.label!r} holds classes"
        )
    if not classes and metric != "pearson_spearman":
        raise UserError(
            f"task {block.name}: label {block.label!r} holds float scores; use metric pearson_spearman"
        )
    if metric == "f1" and len(classes) != 2:
        raise UserError(
            f"task {block.name}: metric f1 is binary; the data has {len(classes)} classes (use macro_f1)"
        )
    source = (
        block.data
        if isinstance(block.data, str)
        else ", ".join(f"{split}: {file}" for split, file in block.data.model_dump().items() if file)
    )
    data = UserData(
        source=source,
        config=block.config,
        label=block.label,
        carved_validation=block.validation_fraction if "validation" not in raw else None,
        block_json=block.model_dump_json(),
    )
    return Task.of(block.name, block_text(block), classes, METRIC_NAMES[metric], data=data)


@functools.cache
def _splits(block_json: str) -> DatasetDict:
    """The block's train and validation rows with columns text…, ``label`` (class id or score), ``idx``."""
    block = TaskBlock.model_validate_json(block_json)
    task = task_from_block(block)
    raw = _read(block)
    if "validation" not in raw:
        logger.info("%s: the data has no validation split; %s", task.name, validation_note(task))
        carved = raw["train"].train_test_split(test_size=block.validation_fraction, seed=CARVE_SEED)
        raw = DatasetDict({"train": carved["train"], "validation": carved["test"]})
    return DatasetDict({split: _normalized(task, block, split, raw[split]) for split in SPLITS})


def _normalized(task: Task, block: TaskBlock, split: str, data: Dataset) -> Dataset:
    text = block_text(block)
    feature = data.features[block.label]
    names = feature.names if isinstance(feature, ClassLabel) else None
    ids = {name: index for index, name in enumerate(task.label_names)}

    def label_of(value: Any, row: int) -> int | float:
        if task.is_regression:
            if value is None or (isinstance(value, float) and math.isnan(value)):
                raise UserError(f"task {task.name}: {split} row {row} has no {block.label!r} score")
            return float(value)
        name = (
            names[value]
            if names is not None
            else (str(int(value)) if isinstance(value, float) else str(value))
        )
        if name not in ids:
            raise UserError(
                f"task {task.name}: {split} row {row} has {block.label} {value!r}, not one of the classes "
                f"{', '.join(task.label_names)}"
            )
        return ids[name]

    def convert(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        out: dict[str, list] = {
            column: ["" if v is None else str(v) for v in batch[column]] for column in text
        }
        out["label"] = [label_of(v, row) for v, row in zip(batch[block.label], indices, strict=True)]
        out["idx"] = indices
        return out

    features = Features(
        {
            **{column: Value("string") for column in text},
            "label": Value("float32") if task.is_regression else ClassLabel(names=list(task.label_names)),
            "idx": Value("int32"),
        }
    )
    return data.map(
        convert,
        batched=True,
        with_indices=True,
        remove_columns=data.column_names,
        features=features,
        load_from_cache_file=False,
        keep_in_memory=True,
        desc=f"Reading {task.name} {split}",
    )


def load_user_split(task: Task, split: str, max_samples: int | None) -> Dataset:
    """One split of a task from data (its text columns, ``label`` and ``idx``), its first ``max_samples``
    rows."""
    if task.data is None:
        raise ValueError(f"{task.name} is not a task from data")
    dataset = _splits(task.data.block_json)[split]
    if max_samples is not None and max_samples < len(dataset):
        dataset = dataset.select(range(max_samples))
    return dataset


def user_data_record(task: Task) -> dict[str, str | None]:
    """Where the task's rows come from, which are scored, and the SHA-256 of their local files' bytes (None for a Hub
    dataset: its revision is the Hub's)."""
    if task.data is None:
        raise ValueError(f"{task.name} is not a task from data")
    block = TaskBlock.model_validate_json(task.data.block_json)
    if isinstance(block.data, DataFiles):
        paths = [Path(file).expanduser() for file in (block.data.train, block.data.validation) if file]
    else:
        folder = Path(block.data).expanduser()
        paths = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    record = {"source": task.data.source, "validation": validation_note(task), "sha256": None}
    if paths:
        digest = hashlib.sha256()
        for path in paths:
            digest.update(f"{path.name}:{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
        record["sha256"] = digest.hexdigest()
    return record


def validation_note(task: Task) -> str:
    """Which rows the task is scored on: its data's validation split, or a part carved from train."""
    if task.data is None or task.data.carved_validation is None:
        return "the validation split"
    return f"{task.data.carved_validation:.0%} of train held out as validation (seed {CARVE_SEED})"
