"""``nlpcompress.load(folder)``: a callable that labels texts (or text pairs) with a saved model, on the
runtime its folder holds, and ``nlpcompress predict`` over a JSON Lines file.

The output follows the Hugging Face ``text-classification`` pipeline: ``{"label": name, "score": p}``
per input (the softmax probability of the predicted class; a regression gives its value as ``score``
and the label ``score``). A single input gives one dict, a list gives a list.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from nlpcompress.errors import UserError
from nlpcompress.glue import get_task
from nlpcompress.models import load_tokenizer
from nlpcompress.runtime.backends import EXPORT_FILES, Predictor, check_backend, load_predictor
from nlpcompress.runtime.extras import installed

AUTO = "auto"
# "auto": what the recipe exported to and verified, else the first of these whose files are there
# (int8 first: 2.2-14x faster than PyTorch fp32 in benchmarks/results; OpenVINO led ORT there)
AUTO_ORDER = ("openvino-int8", "onnxruntime-int8", "openvino", "onnxruntime", "torch")
DEFAULT_MAX_LENGTH = 128

Text = str | tuple[str, str] | list[str]


def folder_backends(folder: Path) -> list[str]:
    """The backends whose files the folder holds and whose runtime is installed, in ``AUTO_ORDER``."""
    usable = []
    for backend in AUTO_ORDER:
        if backend == "torch":
            usable.append(backend)
            continue
        directory, name = EXPORT_FILES[backend]
        runtime = "openvino" if directory == "openvino" else "onnxruntime"
        if (folder / directory / name).is_file() and installed(runtime):
            usable.append(backend)
    return usable


def pick_backend(folder: Path) -> str:
    """``auto``: the backend the run's ``export:`` verified and evaluated, else the first usable one."""
    usable = folder_backends(folder)
    results = folder / "results.json"
    if results.is_file():
        exported = json.loads(results.read_text()).get("runtime", {}).get("backend")
        if exported in usable:
            return exported
    return usable[0]


def run_settings(folder: Path) -> dict[str, Any]:
    """What the run that wrote ``folder`` recorded in its ``recipe.yaml`` (empty for other folders)."""
    recipe = folder / "recipe.yaml"
    return (yaml.safe_load(recipe.read_text()) or {}) if recipe.is_file() else {}


class TextClassifier:
    """Texts (or pairs) → ``{"label", "score"}``, in batches, truncated to ``max_length`` tokens."""

    def __init__(self, predictor: Predictor, tokenizer, max_length: int, batch_size: int):
        self.predictor, self.tokenizer = predictor, tokenizer
        self.max_length, self.batch_size = max_length, batch_size
        config = predictor.config
        self.labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        self.regression = config.num_labels == 1

    @property
    def backend(self) -> str:
        return self.predictor.backend

    def __call__(self, inputs: Text | Sequence[Text]) -> dict[str, Any] | list[dict[str, Any]]:
        single = isinstance(inputs, str) or (isinstance(inputs, tuple) and len(inputs) == 2)
        items = [inputs] if single else list(inputs)
        pairs = [_as_pair(item, index) for index, item in enumerate(items)]
        outputs = []
        for start in range(0, len(pairs), self.batch_size):
            outputs += self._batch(pairs[start : start + self.batch_size])
        return outputs[0] if single else outputs

    def _batch(self, pairs: list[tuple[str, str | None]]) -> list[dict[str, Any]]:
        firsts = [first for first, _ in pairs]
        seconds = [second for _, second in pairs]
        if any(s is None for s in seconds) and any(s is not None for s in seconds):
            raise UserError("a batch mixes single texts and pairs; give one kind")
        encoded = self.tokenizer(
            firsts,
            None if seconds[0] is None else seconds,
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        logits = self.predictor(
            input_ids=encoded["input_ids"],
            attention_mask=encoded["attention_mask"],
            token_type_ids=encoded.get("token_type_ids"),
        )
        if self.regression:
            return [{"label": "score", "score": float(v)} for v in logits[:, 0]]
        probabilities = torch.softmax(logits.float(), dim=-1)
        best = probabilities.argmax(dim=-1)
        return [
            {"label": self.labels[int(i)], "score": float(p[i])}
            for i, p in zip(best, probabilities, strict=True)
        ]


def _as_pair(item: Any, index: int) -> tuple[str, str | None]:
    if isinstance(item, str):
        return item, None
    if isinstance(item, tuple | list) and len(item) == 2 and all(isinstance(t, str) for t in item):
        return item[0], item[1]
    raise UserError(f"input {index}: give a text or a pair of texts (got {str(item)[:80]!r})")


def load(
    folder: str | os.PathLike[str],
    backend: str = AUTO,
    max_length: int | None = None,
    batch_size: int = 32,
    threads: int | None = None,
) -> TextClassifier:
    """A classifier over a saved model folder: ``backend`` ``auto`` (the folder's exported, verified
    runtime, else the fastest it holds), or one of ``runtime.backends.BACKENDS``; ``max_length``:
    default the run's own (its ``recipe.yaml``), else 128."""
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise UserError(
            f"{folder}: no config.json; give a folder written by nlpcompress run or save_pretrained"
        )
    if backend != AUTO:
        check_backend(backend)
    chosen = pick_backend(path) if backend == AUTO else backend
    length = max_length or run_settings(path).get("max_length") or DEFAULT_MAX_LENGTH
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1 (got {batch_size})")
    return TextClassifier(
        load_predictor(path, chosen, threads), load_tokenizer(str(path)), length, batch_size
    )


def text_columns(folder: Path) -> tuple[str, ...]:
    """The text columns of the task the run that wrote ``folder`` was trained on (none for other folders)."""
    task = run_settings(folder).get("task")
    if isinstance(task, dict):
        text = task.get("text")
        return (text,) if isinstance(text, str) else tuple(text or ())
    return get_task(task).text_fields if isinstance(task, str) else ()


def read_inputs(path: Path, columns: Sequence[str] = ()) -> list[Text]:
    """The texts of a JSON Lines file: each line ``{"text": ...[, "text_pair": ...]}``, or the run's own
    text columns (``columns``, e.g. ``sentence1`` and ``sentence2``)."""
    shapes = [("text", "text_pair"), ("text",), *([tuple(columns)] if columns else [])]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise UserError(f"--input {path}: cannot read it ({error.strerror or error})") from None
    inputs: list[Text] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise UserError(f"{path}:{number}: not a JSON object") from None
        keys = next(
            (shape for shape in shapes if isinstance(row, dict) and all(k in row for k in shape)), None
        )
        if keys is None:
            allowed = " or ".join("{" + ", ".join(shape) + "}" for shape in shapes)
            raise UserError(f"{path}:{number}: expected an object with the keys {allowed}")
        texts = [row[key] for key in keys]
        if not all(isinstance(text, str) for text in texts):
            raise UserError(f"{path}:{number}: the texts must be strings")
        inputs.append(texts[0] if len(texts) == 1 else (texts[0], texts[1]))
    if not inputs:
        raise UserError(f"{path}: no lines to score")
    return inputs
