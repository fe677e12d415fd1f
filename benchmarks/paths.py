"""Paths in committed result files: relative to the repository (``../shared/...`` for the shared data),
so that a result reads the same on every clone and names no one's home or scratch folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def portable(value: Any) -> Any:
    """``value`` (JSON-like) with every string that is a path under the repository or the shared folder
    rewritten relative to the repository; other strings and paths outside both are kept."""
    if isinstance(value, dict):
        return {key: portable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [portable(item) for item in value]
    if isinstance(value, str):
        for root, shown in ((REPO, ""), (SHARED, "../shared/")):
            prefix = f"{root}/"
            if value.startswith(prefix):
                return shown + value.removeprefix(prefix)
            if value == str(root):
                return shown.rstrip("/") or "."
    return value
