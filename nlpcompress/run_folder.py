"""A run's output folder: never replaced without being asked, one run at a time, and a publish that keeps
the files the run did not write.

A finished run lists the files it wrote in its ``results.json`` (``files``); replacing it (``--overwrite``)
removes those and keeps every other file (the user's notes, anything added later), saying which.
The lock is a file beside the folder holding the owner's process id and host: a second run (or an export)
into the same folder refuses with one line naming that process; the lock of a process that no longer
runs is taken over, and said so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nlpcompress.errors import UserError

logger = logging.getLogger("nlpcompress")

RESULTS = "results.json"
# what a run folder held before results.json listed its files: these names count as the earlier run's
_LEGACY_RUN_FOLDERS = ("artifacts", "onnx", "openvino", "albert")


def check_destination(output_dir: Path, overwrite: bool) -> None:
    """Refuse a file, a folder that is not a run (it may hold the user's files), and a finished run unless
    ``overwrite``."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(
            f"output_dir {str(output_dir)!r} is a file; give a folder (new, empty, or a previous run)"
        )
    if not output_dir.exists() or not any(output_dir.iterdir()):
        return
    if not (output_dir / RESULTS).is_file():
        raise UserError(
            f"output_dir {str(output_dir)!r} exists and is not an nlpcompress run folder; "
            "choose an empty or new folder"
        )
    if not overwrite:
        raise UserError(
            f"output_dir {str(output_dir)!r} holds a finished run ({_describe_run(output_dir)}); add "
            "--overwrite to replace it (files the run did not write are kept), or choose another output_dir"
        )


def _describe_run(folder: Path) -> str:
    try:
        results = json.loads((folder / RESULTS).read_text())
        return f"task {results['task']}, score {results['score']:.4f}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its results.json cannot be read"


def written_files(folder: Path, leave_out: tuple[str, ...] = ()) -> list[str]:
    """Every file under ``folder`` as a relative path, except those under the top-level names ``leave_out``."""
    return sorted(
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.is_file() and path.relative_to(folder).parts[0] not in leave_out
    )


def _earlier_run_files(output_dir: Path, present: set[str], new_files: set[str]) -> set[str]:
    """The files the finished run in ``output_dir`` wrote (its list; for a folder from before the list, the
    names the new run writes too, and the run-made folders)."""
    try:
        listed = json.loads((output_dir / RESULTS).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        listed = None
    if isinstance(listed, list):
        return present & {str(name) for name in listed}
    return {name for name in present if name in new_files or Path(name).parts[0] in _LEGACY_RUN_FOLDERS}


def publish(staging: Path, output_dir: Path) -> None:
    """Swap the finished ``staging`` folder into place. Files of a run it replaces that the earlier run did
    not write are kept (linked into the new folder first, so a kill never loses them); what is replaced
    and kept is said."""
    previous = output_dir.parent / f".{output_dir.name}.previous"
    shutil.rmtree(previous, ignore_errors=True)
    if output_dir.exists():
        new_files = set(written_files(staging))
        old_files = written_files(output_dir)
        earlier = _earlier_run_files(output_dir, set(old_files), new_files)
        kept = [name for name in old_files if name not in earlier and name not in new_files]
        replaced = [name for name in old_files if name in new_files]
        for name in kept:
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(output_dir / name, target)
        logger.warning(
            "--overwrite: replacing the run in %s (%d files of the earlier run, %d of them under the same "
            "name); kept %d files it did not write%s",
            output_dir,
            len(earlier),
            len(replaced),
            len(kept),
            f": {', '.join(kept[:10])}{' ...' if len(kept) > 10 else ''}" if kept else "",
        )
        output_dir.rename(previous)
    staging.rename(output_dir)
    shutil.rmtree(previous, ignore_errors=True)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


# ---------------------------------------------------------------- one run per folder


def lock_path(output_dir: Path) -> Path:
    return output_dir.parent / f".{output_dir.name}.lock"


@contextmanager
def folder_lock(output_dir: Path, purpose: str) -> Iterator[None]:
    """Hold ``output_dir`` for this process while the block runs (``purpose`` says what for, e.g. ``run``);
    the folder's parent is created if missing."""
    lock = lock_path(output_dir)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose, "since": time.time()}
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(
                f"output_dir {str(output_dir)!r}: cannot write beside it ({error.strerror or error})"
            ) from None
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _take_over_if_stale(lock, output_dir)
            continue
        except OSError as error:
            raise UserError(
                f"output_dir {str(output_dir)!r}: cannot write beside it ({error.strerror or error})"
            ) from None
        with os.fdopen(descriptor, "w") as file:
            json.dump(me, file)
        break
    try:
        yield
    finally:
        if _holder(lock) == me:
            lock.unlink(missing_ok=True)


def _holder(lock: Path) -> dict | None:
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _take_over_if_stale(lock: Path, output_dir: Path) -> None:
    """Refuse when the lock's process is running (or runs on another host); remove the lock of a dead one."""
    holder = _holder(lock)
    if holder is None:  # written by a process killed between creating and filling it
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:  # released meanwhile
            return
        if age < 5:
            time.sleep(0.2)  # it may be filling it right now
            return
        logger.warning("taking over the unreadable lock %s", lock)
    elif holder.get("host") != socket.gethostname() or process_running(int(holder.get("pid", -1))):
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(holder.get("since", 0))))
        raise UserError(
            f"{output_dir} is in use by process {holder.get('pid')} on {holder.get('host')} "
            f"({holder.get('purpose', 'a run')} since {since}); wait for it to finish, or stop it "
            f"(a lock whose process has ended is taken over: {lock})"
        )
    else:
        logger.warning(
            "taking over the lock of process %s (%s), which is no longer running",
            holder.get("pid"),
            holder.get("purpose", "a run"),
        )
    lock.unlink(missing_ok=True)


def process_running(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (one of another user's counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
