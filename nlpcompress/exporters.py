"""Exporters: what a run writes or sends once its model is saved and checked, each registered beside the others.

An exporter says from the recipe and the saved model's description (``structure.describe``) whether it
applies, and returns its ``results.json`` entry. Those that write into the run folder run before
``results.json`` is written (``published = False``); those that send the finished folder elsewhere run on
it once it is in place (``published = True``: the Hub push). ``check`` runs before anything trains, so
a run that could not export (no Hub token, a runtime not installed) fails first.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from nlpcompress.albert import export_albert
from nlpcompress.compact import CompactBertForSequenceClassification
from nlpcompress.glue import Task
from nlpcompress.hub import check_push_possible, push_folder
from nlpcompress.recipe import Recipe
from nlpcompress.runtime.export import require_runtime
from nlpcompress.runtime.step import run_export_step


@dataclass
class ExportContext:
    """What an exporter may read: the run folder with the saved model (reloaded), its validation data."""

    folder: Path
    recipe: Recipe
    task: Task
    model: CompactBertForSequenceClassification
    structure: dict[str, Any]  # describe(model)
    tokenizer: PreTrainedTokenizerBase
    eval_datasets: dict[str, Dataset]
    metrics: dict[str, float]  # the saved model's validation metrics
    progress: bool = True


class Exporter(ABC):
    """One export of a finished run; ``key`` names its ``results.json`` entry."""

    key: ClassVar[str]
    published: ClassVar[bool] = False

    @abstractmethod
    def applies(self, recipe: Recipe, structure: dict[str, Any]) -> bool:
        """Whether the run asks for this export (or its model has a form this exporter writes)."""

    @abstractmethod
    def export(self, ctx: ExportContext) -> Any:
        """Write (or send) the export; the ``results.json`` entry."""

    @abstractmethod
    def check(self, recipe: Recipe) -> None:
        """Refuse, before anything trains, a recipe whose export could not happen."""


EXPORTERS: list[Exporter] = []


def register_exporter(exporter_class: type[Exporter]) -> type[Exporter]:
    """Run ``exporter_class`` after every save, in registration order; usable as a decorator."""
    if not (isinstance(exporter_class, type) and issubclass(exporter_class, Exporter)):
        raise TypeError(f"register_exporter: {exporter_class!r} is not an Exporter subclass")
    if any(exporter.key == exporter_class.key for exporter in EXPORTERS):
        raise ValueError(f"register_exporter: the key {exporter_class.key!r} is already registered")
    EXPORTERS.append(exporter_class())
    return exporter_class


def check_exporters(recipe: Recipe) -> None:
    """Every registered exporter's preflight check."""
    for exporter in EXPORTERS:
        exporter.check(recipe)


def run_exporters(ctx: ExportContext, published: bool) -> dict[str, Any]:
    """The entries of the exporters of this phase that apply, in registration order."""
    return {
        exporter.key: exporter.export(ctx)
        for exporter in EXPORTERS
        if exporter.published == published and exporter.applies(ctx.recipe, ctx.structure)
    }


# Keys the tokenizer records about how it was loaded here; a Hub user's loader must not inherit them.
_LOADING_KEYS = ("local_files_only", "is_local")


def portable_files(folder: Path) -> None:
    """Files readable as the user's umask allows (safetensors writes 0600), and a tokenizer config without
    this machine's loading options."""
    umask = os.umask(0)
    os.umask(umask)
    for file in folder.iterdir():
        if file.is_file():
            file.chmod(0o666 & ~umask)
    tokenizer_config = folder / "tokenizer_config.json"
    if tokenizer_config.is_file():
        settings = json.loads(tokenizer_config.read_text())
        tokenizer_config.write_text(
            json.dumps({k: v for k, v in settings.items() if k not in _LOADING_KEYS}, indent=2) + "\n"
        )


def sample_inputs(ctx: ExportContext, rows: int = 8) -> dict[str, torch.Tensor]:
    """A padded batch of the first validation rows, labels left out: inputs to compare two models on."""
    dataset = ctx.eval_datasets[ctx.task.eval_splits[0]]
    batch = DataCollatorWithPadding(ctx.tokenizer)([dataset[i] for i in range(min(rows, len(dataset)))])
    return {key: value for key, value in batch.items() if key != "labels"}


@register_exporter
class AlbertExporter(Exporter):
    """A model in ALBERT's embedding layout is also saved as plain ALBERT (``albert/``), when exact."""

    key = "albert_export"

    def applies(self, recipe: Recipe, structure: dict[str, Any]) -> bool:
        return bool(structure["factorized_embeddings"])  # ALBERT's layout: every table at width E

    def check(self, recipe: Recipe) -> None:
        """Nothing to refuse: whether the model ends in ALBERT's layout is known once it is trained."""

    def export(self, ctx: ExportContext) -> dict[str, Any]:
        entry = export_albert(ctx.model, ctx.tokenizer, ctx.folder / "albert", sample_inputs(ctx))
        if entry["exported"]:
            portable_files(ctx.folder / "albert")
        return entry


@register_exporter
class RuntimeExporter(Exporter):
    """The recipe's ``export:``: ONNX Runtime or OpenVINO, evaluated and timed through the runtime."""

    key = "runtime"

    def applies(self, recipe: Recipe, structure: dict[str, Any]) -> bool:
        return recipe.export is not None

    def check(self, recipe: Recipe) -> None:
        if recipe.export is not None:
            require_runtime(recipe.export.format, recipe.export.int8)

    def export(self, ctx: ExportContext) -> dict[str, Any]:
        recipe = ctx.recipe
        return run_export_step(
            ctx.folder, recipe.export, ctx.task, ctx.eval_datasets, ctx.tokenizer, ctx.metrics,
            recipe.data_dir, recipe.max_length, ctx.progress,
        )  # fmt: skip


@register_exporter
class HubExporter(Exporter):
    """The recipe's ``push_to_hub:``: the published folder uploaded; the entry is the commit URL."""

    key = "hub"
    published = True

    def applies(self, recipe: Recipe, structure: dict[str, Any]) -> bool:
        return recipe.push_to_hub is not None

    def check(self, recipe: Recipe) -> None:
        if recipe.push_to_hub is not None:
            check_push_possible()

    def export(self, ctx: ExportContext) -> str:
        return push_folder(ctx.folder, **ctx.recipe.push_to_hub.model_dump())
