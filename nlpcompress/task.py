"""A recipe's ``task:`` (a GLUE name, or a block describing the user's own data), and the task of a
run folder or a command's ``--task``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from nlpcompress.errors import UserError
from nlpcompress.glue import get_task
from nlpcompress.task_spec import Task
from nlpcompress.user_data import TaskBlock, parse_task_block, task_from_block


def resolve_task(value: str | TaskBlock | dict[str, Any], source: str = "recipe") -> Task:
    """The task a recipe's ``task:`` names: a GLUE task by name, or one made from the block's data."""
    if isinstance(value, str):
        return get_task(value)
    block = value if isinstance(value, TaskBlock) else parse_task_block(value, source)
    return task_from_block(block)


def folder_task(folder: str | Path) -> Task | None:
    """The task a run folder was trained on: its ``recipe.yaml``'s ``task:`` (a GLUE name or the user's
    data), else its ``results.json``'s GLUE task name; None when the folder does not say."""
    recipe, results = Path(folder) / "recipe.yaml", Path(folder) / "results.json"
    try:
        if recipe.is_file():
            value = (yaml.safe_load(recipe.read_text()) or {}).get("task")
            if value is not None:
                return resolve_task(value, str(recipe))
        if results.is_file():
            name = json.loads(results.read_text()).get("task")
            return get_task(name) if isinstance(name, str) else None
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return None


def task_option(value: str | None, folder: str | Path) -> Task:
    """A command's ``--task``: a GLUE name, or a YAML file holding a task block (or a recipe with one);
    without it, the task of the run that wrote ``folder``."""
    if value is None:
        task = folder_task(folder)
        if task is None:
            raise UserError(
                f"{folder} does not say which task it was trained on (no recipe.yaml or results.json): give --task"
            )
        return task
    path = Path(value).expanduser()
    if path.suffix.lower() in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"--task {value}: no such file")
        data = yaml.safe_load(path.read_text())
        block = data.get("task", data) if isinstance(data, dict) else data
        return resolve_task(block, str(path))
    return get_task(value)
