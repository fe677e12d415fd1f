"""Paths in committed result files: relative to the repository (``../shared/...`` for the shared data,
``../runs/...`` for run folders kept beside the repository), so that a result reads the same on every clone
and names no one's home or scratch folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def portable(value: Any) -> Any:
    """``value`` (JSON-like) with every path under the repository's parent folder (the repository itself,
    the shared data, run folders beside it), alone or as a word of a command line, rewritten relative to
    the repository; other strings and paths outside that folder are kept."""
    if isinstance(value, dict):
        return {key: portable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [portable(item) for item in value]
    if isinstance(value, str):
        return " ".join(_relative(word) for word in value.split(" "))
    return value


def _relative(word: str) -> str:
    for root, shown in ((REPO, ""), (REPO.parent, "../")):
        if word.startswith(f"{root}/"):
            return shown + word.removeprefix(f"{root}/")
        if word == str(root):
            return shown.rstrip("/") or "."
    return word
