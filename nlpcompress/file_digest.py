"""The SHA-256 a run records of the files it was made from, so a cached run is reused only for the same
bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def labelled_files_digest(files: Iterable[tuple[str, Path]]) -> str:
    """SHA-256 over one ``label:<SHA-256 of the file's bytes>`` line per file, in the order given. Each
    file is read in chunks, so a large data file is never held in memory whole."""
    digest = hashlib.sha256()
    for label, path in files:
        with path.open("rb") as handle:
            file_hex = hashlib.file_digest(handle, "sha256").hexdigest()
        digest.update(f"{label}:{file_hex}\n".encode())
    return digest.hexdigest()
