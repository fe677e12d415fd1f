"""A task from the user's own labelled data: CSV, TSV, JSON Lines or Parquet files, a folder saved by
``datasets.save_to_disk``, or a Hub dataset, read with ``datasets``.

A recipe's ``task:`` is a GLUE name or a block::

    task:
      name: tickets
      data: {train: data/tickets-train.csv, validation: data/tickets-dev.csv}   # or a folder, or a Hub id
      text: [subject, body]      # one column, or a pair
      label: category            # class names or ids; floats make it a regression task
      metric: macro_f1           # accuracy | macro_f1 | f1 | matthews | pearson_spearman
      encoding: latin-1          # of CSV, TSV and JSON Lines files (default utf-8)
      bad_text: drop             # rows with an empty or non-text text cell: refuse (default) | drop

Class names and their order come from ``labels:``, else from the data (a ``ClassLabel`` column's names,
else the distinct values, sorted); they become the model's ``id2label``. Without a validation split,
one is carved from train (``validation_fraction``, seed ``CARVE_SEED``) and the run says so.

Before any work the rows are checked, and data no task can be made of is refused in one line naming the
file (or split), the column and the value: a file that is not text in ``encoding``, a split without
rows, a text column that is not text (numbers, say), a text cell that is empty, missing or not a string
(unless ``bad_text: drop``, which leaves such rows out and logs how many), a row without a label, labels
of mixed kinds (numbers and words) unless ``labels:`` lists the classes, a label that is not one of the
classes (a validation class that train never has), and a train split of one class. Rows are counted
from 1, a header not counted.
"""

from __future__ import annotations

import codecs
import functools
import itertools
import logging
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from pydantic import Discriminator, Tag, ValidationError, field_validator

from nlpcompress.errors import UserError
from nlpcompress.file_digest import labelled_files_digest
from nlpcompress.schema import NonEmptyStr, OptionalStr, Schema, check, describe_error
from nlpcompress.task_spec import METRIC_NAMES, Task, UserData

logger = logging.getLogger("nlpcompress")

CARVE_SEED = 0
OWN_VALIDATION_SPLIT = (
    "the validation split"  # validation_note when the data's own validation split is scored
)
SPLITS = ("train", "validation")
FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
# a number written as text ("1", "-0.5", "2e3"): a label column of such and of words mixes two kinds
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
LABEL_KINDS = ("a number", "a word", "true or false")
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


def _text_encoding(value: object) -> bool:
    """Whether ``value`` names a codec between bytes and text (base64, bytes to bytes, is refused too)."""
    if not isinstance(value, str):
        return False
    try:
        "".encode(value)
    except LookupError:
        return False
    return True


DataFile = Annotated[str | None, check(_data_file, f"must be a file ending in one of {', '.join(FORMATS)}")]
Encoding = Annotated[
    str, check(_text_encoding, "must be a text encoding Python knows, such as utf-8, latin-1 or cp1252")
]


class DataFiles(Schema):
    """Local files, one per split (``.csv``, ``.tsv``, ``.json``/``.jsonl``, ``.parquet``)."""

    train: Annotated[DataFile, check(lambda v: v is not None, "must name the training file")]
    validation: DataFile = None


class TaskBlock(Schema):
    """A recipe's ``task:`` when it is the user's own data. ``name``: used in folder names, the card and
    results.json. ``data``: ``{train: FILE, validation: FILE}`` (``.csv``, ``.tsv``, ``.json``/``.jsonl``,
    ``.parquet``; without a validation file ``validation_fraction`` of train is held out, seed 0), a folder
    saved by ``datasets.save_to_disk``, or a Hub dataset id (``config``: its configuration). ``text``: one
    column or a pair. ``label``: class names or ids (float scores make a regression). ``metric``: default
    accuracy for classes, pearson_spearman for scores. ``labels``: the classes in the model's order
    (default: the data's ClassLabel names, else its values sorted). ``encoding``: of CSV, TSV and JSON Lines
    files. ``bad_text``: ``refuse`` rows whose text is empty, missing or not a string, or ``drop`` them (and
    say how many)."""

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
    encoding: Encoding = "utf-8"  # of CSV, TSV and JSON Lines files
    bad_text: Literal["refuse", "drop"] = "refuse"  # rows with a text cell empty, missing or not a string

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


# ---------------------------------------------------------------- reading


def _read(block: TaskBlock) -> DatasetDict:
    """The block's data as a DatasetDict (train, and validation when it has one), read once per process."""
    return _read_once(block.model_dump_json())


@functools.cache
def _read_once(block_json: str) -> DatasetDict:
    block = TaskBlock.model_validate_json(block_json)
    if isinstance(block.data, DataFiles):
        return _read_files(block, block.data)
    _check_no_encoding(block, repr(block.data))
    folder = Path(block.data).expanduser()
    if folder.is_dir():
        try:
            loaded = datasets.load_from_disk(str(folder))
        except FileNotFoundError as error:
            raise UserError(
                f"task {block.name}: {block.data!r} is a folder but not one saved by datasets' save_to_disk "
                f"({str(error).splitlines()[0]})"
            ) from None
        except IndexError:  # datasets' load_from_disk concatenates a split's shards: none when it had no rows
            raise UserError(
                f"task {block.name}: {block.data!r} holds a split saved with no rows, which datasets cannot "
                "read back; leave that split out or give it rows"
            ) from None
        return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
    if folder.suffix.lower() in FORMATS or ("/" in block.data and block.data.startswith((".", "/", "~"))):
        raise UserError(f"task {block.name}: {block.data!r} does not exist")
    return _load(block.data, block.name, name=block.config)


def _read_files(block: TaskBlock, data: DataFiles) -> DatasetDict:
    """Each split's file, read alone so that an error names its file."""
    files = {split: getattr(data, split) for split in SPLITS if getattr(data, split)}
    for split, file in files.items():
        if not Path(file).expanduser().is_file():
            raise UserError(f"task {block.name}: the {split} file {file!r} does not exist")
    suffixes = {Path(file).suffix.lower() for file in files.values()}
    if len({FORMATS[suffix] for suffix in suffixes}) != 1 or len(suffixes & {".csv", ".tsv"}) > 1:
        raise UserError(f"task {block.name}: the splits' files must have one format (got {sorted(suffixes)})")
    suffix = suffixes.pop()
    if FORMATS[suffix] == "parquet":
        _check_no_encoding(block, "Parquet files")
        options = {}
    else:
        options = {"encoding": block.encoding}
        if suffix == ".tsv":
            options |= {"delimiter": "\t", "quoting": 3}  # 3: csv.QUOTE_NONE
    return DatasetDict(
        {split: _read_file(block, split, file, FORMATS[suffix], options) for split, file in files.items()}
    )


def _check_no_encoding(block: TaskBlock, data: str) -> None:
    """Refuse an ``encoding:`` other than UTF-8 for data that is not text files: it would not be used."""
    if codecs.lookup(block.encoding).name != "utf-8":
        raise UserError(
            f"task {block.name}: encoding: is for CSV, TSV and JSON Lines files, not {data}; leave it out"
        )


def _read_file(block: TaskBlock, split: str, file: str, fmt: str, options: dict[str, Any]) -> Dataset:
    """One split's file; a file that is not text in the block's encoding, or has no rows, is named."""
    path = Path(file).expanduser().resolve()
    try:
        if fmt != "parquet":
            _check_decodes(block, split, file, path)
        return datasets.load_dataset(fmt, data_files={split: str(path)}, split=split, **options)
    except OSError as error:
        raise UserError(
            f"task {block.name}: cannot read the {split} file {file!r} ({error.strerror or error})"
        ) from None
    except (ValueError, StopIteration, datasets.exceptions.DatasetGenerationError) as error:
        if not _has_rows(path, fmt, block.encoding):
            raise UserError(f"task {block.name}: the {split} file {file!r} has no rows") from None
        raise UserError(
            f"task {block.name}: cannot read the {split} file {file!r}: {_root_cause(error)}"
        ) from None


def _check_decodes(block: TaskBlock, split: str, file: str, path: Path) -> None:
    """Refuse a file that is not text in the block's encoding, naming the line of its first bad byte
    (the CSV loader fails with a traceback there, the JSON one reads garbage)."""
    decoder = codecs.getincrementaldecoder(block.encoding)()
    with path.open("rb") as lines:
        for number, line in enumerate(itertools.chain(lines, [b""]), 1):
            try:
                decoder.decode(line, final=not line)  # the last, empty, piece: bytes left over are an error
            except UnicodeDecodeError as error:
                raise UserError(
                    f"task {block.name}: the {split} file {file!r} is not {block.encoding} text (byte "
                    f"0x{error.object[error.start]:02x} on line {number if line else number - 1}); give "
                    "its encoding in the task's encoding: key (e.g. encoding: latin-1, or cp1252)"
                ) from None


def _has_rows(path: Path, fmt: str, encoding: str) -> bool:
    """Whether a file the loader refused holds a row: a line after a CSV's header, a JSON line, a Parquet
    row (a file that is no Parquet at all counts as having rows: the loader's error says what it is)."""
    if fmt == "parquet":
        try:
            return pq.read_metadata(path).num_rows > 0
        except pa.ArrowException:
            return True
    with path.open(encoding=encoding) as file:
        lines = sum(1 for _ in itertools.islice((line for line in file if line.strip()), 2))
    return lines > (1 if fmt == "csv" else 0)


def _root_cause(error: BaseException) -> str:
    """The first line of the innermost error that ``error`` was raised from (the loaders wrap theirs)."""
    while error.__cause__ or error.__context__:
        error = error.__cause__ or error.__context__
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"


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


def _where(block: TaskBlock, split: str) -> str:
    """A split as the user knows it: ``the validation file 'dev.csv'``, ``the train split of 'user/data'``."""
    if isinstance(block.data, DataFiles):
        return f"the {split} file {getattr(block.data, split)!r}"
    return f"the {split} split of {block.data!r}"


def _cells(data: Dataset, column: str) -> list[Any]:
    """A column's cells as Python values (a slice: iterating a column reads row by row, 100× slower)."""
    return data[column][:]


# ---------------------------------------------------------------- the rows a task uses


def _rows(block: TaskBlock) -> DatasetDict:
    """The block's train and validation rows, checked (see the module docstring), those with bad text
    left out under ``bad_text: drop``; once per process."""
    return _rows_once(block.model_dump_json())


@functools.cache
def _rows_once(block_json: str) -> DatasetDict:
    block = TaskBlock.model_validate_json(block_json)
    raw = _read(block)
    if "train" not in raw:
        raise UserError(f"task {block.name}: the data has no train split (splits: {', '.join(raw)})")
    rows = DatasetDict({split: raw[split] for split in SPLITS if split in raw})
    for split, data in rows.items():
        _check_columns(block, split, data)
        if len(data) == 0:
            raise UserError(f"task {block.name}: {_where(block, split)} has no rows")
    bad = {split: _bad_text(block, split, data) for split, data in rows.items()}
    if any(bad.values()) and block.bad_text == "refuse":
        raise UserError(_bad_text_message(block, bad))
    rows = DatasetDict({split: _drop(block, split, data, bad[split]) for split, data in rows.items()})
    if "validation" not in rows and len(rows["train"]) < 2:
        raise UserError(
            f"task {block.name}: {_where(block, 'train')} has one row, too few to hold out validation from; "
            "give a validation file"
        )
    _check_labels_given(block, rows)
    return rows


def _check_columns(block: TaskBlock, split: str, data: Dataset) -> None:
    reserved = [column for column in block_text(block) if column in ("label", "idx")]
    if (reserved and block.label != "label") or "idx" in reserved:
        raise UserError(f"task {block.name}: a text column may not be called 'label' or 'idx'; rename it")
    wanted = [*block_text(block), block.label]
    missing = [column for column in wanted if column not in data.column_names]
    if missing:
        raise UserError(
            f"task {block.name}: {_where(block, split)} has no column {', '.join(map(repr, missing))}; "
            f"its columns: {', '.join(data.column_names)}"
        )


def _bad_text(block: TaskBlock, split: str, data: Dataset) -> dict[str, list[int]]:
    """The rows (0-based) of each text column whose cell is empty, missing or not a string. A column
    without a single string but with values is refused: the loader read it as numbers (say) because every
    cell is one, so it is not the text."""
    bad = {}
    for column in block_text(block):
        cells = _cells(data, column)
        example = next((v for v in cells if v is not None), None)
        if example is not None and not any(isinstance(v, str) for v in cells):
            feature = data.features[column]
            kind = feature.dtype if isinstance(feature, Value) else type(feature).__name__
            raise UserError(
                f"task {block.name}: text column {column!r} of {_where(block, split)} is not text: every "
                f"cell was read as {kind} (e.g. {example!r}); is it the right column?"
            )
        rows = [row for row, v in enumerate(cells) if not (isinstance(v, str) and v.strip())]
        if rows:
            bad[column] = rows
    return bad


def _bad_text_message(block: TaskBlock, bad: dict[str, dict[str, list[int]]]) -> str:
    counts = "; ".join(
        f"{len(rows)} of {_where(block, split)} in column {column!r} (the first: row {rows[0] + 1})"
        for split, columns in bad.items()
        for column, rows in columns.items()
    )
    return (
        f"task {block.name}: rows whose text is empty, missing or not a string: {counts}; fix them, or set "
        "bad_text: drop to leave such rows out"
    )


def _drop(block: TaskBlock, split: str, data: Dataset, bad: dict[str, list[int]]) -> Dataset:
    """The split without the rows in ``bad`` (logged); refused when none is left."""
    dropped = set().union(*bad.values())
    if not dropped:
        return data
    if len(dropped) == len(data):
        raise UserError(
            f"task {block.name}: {_where(block, split)} has no row with text in every text column "
            f"({', '.join(block_text(block))}): bad_text: drop leaves it empty"
        )
    logger.info(
        "%s: bad_text: drop left out %d of the %d rows of %s (text empty, missing or not a string)",
        block.name, len(dropped), len(data), _where(block, split),
    )  # fmt: skip
    return data.select([row for row in range(len(data)) if row not in dropped])


def _missing(value: Any, names: list[str] | None) -> bool:
    """A label cell that holds no label: empty, NaN, or a ``ClassLabel``'s -1."""
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (names is not None and value == -1)
    )


def _check_labels_given(block: TaskBlock, rows: DatasetDict) -> None:
    """Refuse rows without a label, naming how many and the first."""
    for split, data in rows.items():
        names = _names(block, data)
        missing = [row for row, v in enumerate(_cells(data, block.label)) if _missing(v, names)]
        if missing:
            raise UserError(
                f"task {block.name}: {_where(block, split)} has {len(missing)} row(s) without a "
                f"{block.label!r} label (the first: row {missing[0] + 1}); give every row a label"
            )


def _names(block: TaskBlock, data: Dataset) -> list[str] | None:
    """The class names of a ``ClassLabel`` label column (its cells are ids), else None."""
    feature = data.features[block.label]
    return feature.names if isinstance(feature, ClassLabel) else None


def _label_name(value: Any, names: list[str] | None) -> str:
    """A label cell as a class name: a ``ClassLabel``'s name, a whole number's digits (1.0 is "1"), its text."""
    if names is not None:
        return names[value]
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# ---------------------------------------------------------------- the task


def _class_names(block: TaskBlock, train: Dataset) -> tuple[str, ...]:
    """Class names in id order ((): a regression task)."""
    names = _names(block, train)
    if names is not None:
        if block.labels is not None and set(block.labels) != set(names):
            raise UserError(
                f"task {block.name}: labels {block.labels} are not the data's classes {list(names)}"
            )
        return tuple(block.labels) if block.labels is not None else tuple(names)
    cells = _cells(train, block.label)
    _check_label_kinds(block, cells)
    values = set(cells)
    if all(isinstance(v, float) for v in values) and any(not v.is_integer() for v in values):
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


def _label_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float) or (isinstance(value, str) and NUMBER.fullmatch(value.strip())):
        return "a number"
    return "a word" if isinstance(value, str) else f"a {type(value).__name__}"


def _check_label_kinds(block: TaskBlock, cells: list[Any]) -> None:
    """Refuse train labels that are not one class name or score each (a list), and labels of mixed kinds
    (``1`` and ``pos``: a typo or two columns merged) unless ``labels:`` names the classes."""
    examples: dict[str, Any] = {}
    for value in cells:
        examples.setdefault(_label_kind(value), value)
    where = f"the label column {block.label!r} of {_where(block, 'train')}"
    odd = next((kind for kind in examples if kind not in LABEL_KINDS), None)
    if odd is not None:
        raise UserError(
            f"task {block.name}: {where} holds {odd} ({examples[odd]!r}); a row's label is one class name "
            "or score"
        )
    if len(examples) > 1 and block.labels is None:
        shown = ", ".join(f"{value!r} ({kind})" for kind, value in examples.items())
        raise UserError(
            f"task {block.name}: {where} mixes kinds of label: {shown}; make them one kind, or list the "
            "classes in labels:"
        )


def _check_two_or_more(block: TaskBlock, classes: tuple[str, ...], train: Dataset) -> None:
    """Refuse a train split of one class (or one score) only: there is nothing to learn."""
    names = _names(block, train)
    seen = {_label_name(value, names) for value in _cells(train, block.label)}
    if len(seen) == 1:
        kind = "class" if classes else "score"
        raise UserError(
            f"task {block.name}: the label column {block.label!r} of {_where(block, 'train')} holds one "
            f"{kind} only, {seen.pop()!r}; a task needs rows of two or more"
        )


def _check_label_values(block: TaskBlock, classes: tuple[str, ...], rows: DatasetDict) -> None:
    """Refuse a label that is not one of the classes: a validation class that train never has, or a value
    that ``labels:`` does not list."""
    for split, data in rows.items():
        names = _names(block, data)
        for row, value in enumerate(_cells(data, block.label), 1):
            if classes and _label_name(value, names) not in classes:
                origin = "labels:" if block.labels is not None else "the classes train has:"
                raise UserError(
                    f"task {block.name}: row {row} of {_where(block, split)} has {block.label} {value!r}, "
                    f"not one of {origin} {', '.join(classes)}"
                    + ("" if block.labels is not None else "; to keep it, list every class in labels:")
                )


def block_text(block: TaskBlock) -> tuple[str, ...]:
    return (block.text,) if isinstance(block.text, str) else tuple(block.text)


def default_metric(classes: tuple[str, ...]) -> str:
    return "pearson_spearman" if not classes else "accuracy"


def task_from_block(block: TaskBlock) -> Task:
    """The task the block describes: its columns, classes (from the data unless listed), metric; data no
    task can be made of is refused here, before any work."""
    rows = _rows(block)
    classes = _class_names(block, rows["train"])
    _check_two_or_more(block, classes, rows["train"])
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
    _check_label_values(block, classes, rows)
    source = (
        block.data
        if isinstance(block.data, str)
        else ", ".join(f"{split}: {file}" for split, file in block.data.model_dump().items() if file)
    )
    data = UserData(
        source=source,
        config=block.config,
        label=block.label,
        carved_validation=block.validation_fraction if "validation" not in rows else None,
        block_json=block.model_dump_json(),
    )
    return Task.of(block.name, block_text(block), classes, METRIC_NAMES[metric], data=data)


@functools.cache
def _splits(block_json: str) -> DatasetDict:
    """The block's train and validation rows with columns text…, ``label`` (class id or score), ``idx``."""
    block = TaskBlock.model_validate_json(block_json)
    task = task_from_block(block)
    rows = _rows(block)
    if "validation" not in rows:
        logger.info("%s: the data has no validation split; %s", task.name, validation_note(task))
        carved = rows["train"].train_test_split(test_size=block.validation_fraction, seed=CARVE_SEED)
        rows = DatasetDict({"train": carved["train"], "validation": carved["test"]})
    return DatasetDict({split: _normalized(task, block, split, rows[split]) for split in SPLITS})


def _normalized(task: Task, block: TaskBlock, split: str, data: Dataset) -> Dataset:
    """The split's checked rows as text columns, ``label`` (a class id, or a score) and ``idx``."""
    text = block_text(block)
    names = _names(block, data)
    ids = {name: index for index, name in enumerate(task.label_names)}

    def label_of(value: Any) -> int | float:
        return float(value) if task.is_regression else ids[_label_name(value, names)]

    def convert(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        out: dict[str, list] = {column: batch[column] for column in text}
        out["label"] = [label_of(value) for value in batch[block.label]]
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
        record["sha256"] = labelled_files_digest((path.name, path) for path in paths)
    return record


def validation_note(task: Task) -> str:
    """Which rows the task is scored on: its data's validation split, or a part carved from train."""
    if task.data is None or task.data.carved_validation is None:
        return OWN_VALIDATION_SPLIT
    return f"{task.data.carved_validation:.0%} of train held out as validation (seed {CARVE_SEED})"
