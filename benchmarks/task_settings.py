"""A suite's per-task settings file: where each task departs from its suite (sequence length, training
rows) and how its baseline, the teacher of every compression stage, is trained. Every recipe the harness
runs on the task inherits it; ``python -m benchmarks.baseline_grid`` writes a task's ``baseline`` block from
the best cell of its committed grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nlpcompress.errors import UserError

FOLDER = Path(__file__).resolve().parent / "suite_settings"
ALL_ROWS = "all"
KEYS = ("max_length", "train_rows", "baseline", "selected_from")
HEADER = """\
# Per-task settings of the {suite} suite. Every recipe the GLUE harness runs on a task inherits the task's
# max_length and train_rows ("all": the task's whole training set; absent: the suite's rows); its
# baseline (the teacher of every compression stage) trains with `baseline`. `selected_from` names the grid
# the baseline's learning rate and epochs were chosen from (the best dev score of the cells); a task without
# it keeps settings that no grid has chosen.
# Written by: python -m benchmarks.baseline_grid --suite {suite} --tasks ... (edit max_length, train_rows
# and the baseline's batch size here; the grid rewrites learning_rate and num_train_epochs)
"""


@dataclass(frozen=True)
class TaskSetting:
    """One task's departures from its suite; ``train_rows`` None keeps the suite's rows, ``"all"`` takes
    every training row."""

    max_length: int | None = None
    train_rows: int | str | None = None
    baseline_training: dict[str, Any] = field(default_factory=dict)
    selected_from: str | None = None

    def to_yaml_block(self) -> dict[str, Any]:
        block = {
            "max_length": self.max_length,
            "train_rows": self.train_rows,
            "baseline": dict(self.baseline_training),
            "selected_from": self.selected_from,
        }
        return {key: value for key, value in block.items() if value not in (None, {})}


def settings_path(suite: str) -> Path:
    return FOLDER / f"{suite}.yaml"


def parse_setting(task: str, block: Any, source: str) -> TaskSetting:
    """One task's block of a settings file; an unknown key or a wrong value is refused with one line."""
    if not isinstance(block, dict):
        raise UserError(f"{source}: {task}: expected a mapping of {', '.join(KEYS)}")
    unknown = sorted(set(block) - set(KEYS))
    if unknown:
        raise UserError(f"{source}: {task}: unknown key {unknown[0]!r}; allowed: {', '.join(KEYS)}")
    max_length, rows = block.get("max_length"), block.get("train_rows")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 8):
        raise UserError(f"{source}: {task}: max_length {max_length!r}: give an integer of at least 8")
    if rows is not None and rows != ALL_ROWS and (not isinstance(rows, int) or rows < 1):
        raise UserError(f"{source}: {task}: train_rows {rows!r}: give a positive integer or {ALL_ROWS!r}")
    baseline = block.get("baseline", {})
    if not isinstance(baseline, dict):
        raise UserError(f"{source}: {task}: baseline: expected a mapping of training settings")
    return TaskSetting(max_length, rows, dict(baseline), block.get("selected_from"))


def load_settings(path: Path) -> dict[str, TaskSetting]:
    """Every task's setting in ``path`` (an empty mapping when the file does not exist)."""
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of task names to settings")
    return {task: parse_setting(task, block, str(path)) for task, block in data.items()}


def settings_text(suite: str, settings: dict[str, TaskSetting]) -> str:
    """The settings file's text: the header, then one block per task, in the order given."""
    body = yaml.safe_dump(
        {task: setting.to_yaml_block() for task, setting in settings.items()}, sort_keys=False
    )
    return HEADER.format(suite=suite) + body
