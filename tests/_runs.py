"""Helpers of the tests that run recipes through the CLI: a fresh ``nlpcompress`` process, a tiny recipe."""

import subprocess
import sys
from pathlib import Path

import yaml


def fresh_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """The installed ``nlpcompress`` command in a new interpreter, as a user runs it from a shell."""
    command = Path(sys.executable).with_name("nlpcompress")
    prefix = [str(command)] if command.exists() else [sys.executable, "-m", "nlpcompress.cli"]
    return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=timeout)


def write_recipe(folder: Path, **fields) -> Path:
    recipe = {
        "model": fields.pop("model"),
        "task": "sst2",
        "data_dir": fields.pop("data_dir"),
        "max_train_samples": 64,
        "max_eval_samples": 48,
        "max_length": 32,
        "seed": 7,
        "output_dir": str(folder / "out"),
        "training": {"learning_rate": 1e-3, "per_device_train_batch_size": 16, "num_train_epochs": 1},
        "stages": [{"type": "finetune"}],
        **fields,
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def write_task_recipe(folder: Path, model: Path, task: dict | str, stages: list, **fields) -> Path:
    """A tiny-budget recipe (4 steps, 32 tokens) of ``stages`` on ``task`` (a GLUE name or a task block)."""
    recipe = {
        "model": str(model), "task": task, "max_length": 32, "seed": 3, "output_dir": str(folder / "out"),
        "training": {"learning_rate": 1e-3, "per_device_train_batch_size": 16, "max_steps": 4},
        "stages": stages, **fields,
    }  # fmt: skip
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path
