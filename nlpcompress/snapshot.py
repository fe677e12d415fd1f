"""A model between two stages, saved so an interrupted run can resume: config, weights (safetensors) and the
fixed masks still attached to its linears (a later stage must keep the zeros a movement stage chose).

Only what a finished stage leaves can be saved: plain linears and ``Mask`` transforms. Loading reads
safetensors only; nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from nlpcompress.compact import CompactBertConfig, CompactBertForSequenceClassification
from nlpcompress.parametrize import Mask, transforms, transforms_of

MANIFEST = "masks.json"
WEIGHTS = "model.safetensors"


def save_snapshot(model: CompactBertForSequenceClassification, folder: Path) -> None:
    """Write ``model`` to ``folder`` (config.json, model.safetensors, masks.json)."""
    unsupported = {name: type(t).__name__ for name, t in transforms(model).items() if not isinstance(t, Mask)}
    if unsupported:
        raise ValueError(f"cannot snapshot transforms other than fixed masks: {unsupported}")
    masked = [name for name, module in model.named_modules() if transforms_of(module)]
    folder.mkdir(parents=True, exist_ok=True)
    model.config.to_json_file(folder / "config.json")
    state = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    save_file(state, folder / WEIGHTS)
    (folder / MANIFEST).write_text(json.dumps(masked))


def load_snapshot(folder: Path) -> CompactBertForSequenceClassification:
    """The model ``save_snapshot`` wrote, masks attached again."""
    config = CompactBertConfig.from_json_file(folder / "config.json")
    model = CompactBertForSequenceClassification(config)
    modules = dict(model.named_modules())
    for name in json.loads((folder / MANIFEST).read_text()):
        weight = modules[name].weight
        torch.nn.utils.parametrize.register_parametrization(
            modules[name], "weight", Mask(torch.ones_like(weight))
        )
    model.load_state_dict(load_file(folder / WEIGHTS), strict=True)
    return model
