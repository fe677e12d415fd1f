"""The SHA-256 a run records of the files it was made from, so a cached run is reused only for the same
bytes. Files are read in chunks, so a large data or weights file is never held in memory whole."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

_CHUNK_BYTES = 1 << 20


def _feed(digest: hashlib._Hash, path: Path) -> None:
    """Add the file's bytes to ``digest``, a chunk at a time (``hashlib.file_digest`` needs Python 3.11)."""
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)


def labelled_files_digest(files: Iterable[tuple[str, Path]]) -> str:
    """SHA-256 over one ``label:<SHA-256 of the file's bytes>`` line per file, in the order given."""
    digest = hashlib.sha256()
    for label, path in files:
        file_hash = hashlib.sha256()
        _feed(file_hash, path)
        digest.update(f"{label}:{file_hash.hexdigest()}\n".encode())
    return digest.hexdigest()


def concatenated_files_digest(paths: Iterable[Path]) -> str:
    """SHA-256 of the files' bytes one after another, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        _feed(digest, path)
    return digest.hexdigest()
