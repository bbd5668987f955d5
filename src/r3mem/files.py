"""Files written whole or not at all, and files more than one process writes.

A file is written beside its target under a name of this writer's own and
renamed over the target (atomic on POSIX): a crash or a second writer never leaves a
half-written file where a good one stood, a failure leaves no temporary behind, and the
target keeps its permissions. Only a writer killed mid-save (``kill -9``) leaves its
temporary: :func:`remove_stale_temps` clears those, under the file's lock.

Files that several processes update (memory files) are read, changed and renamed under
:func:`locked`, an advisory lock on ``NAME.lock`` beside them: a second writer waits for the
first and then reads what it wrote.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

# How long a writer waits for another to finish with a file before it gives up.
LOCK_TIMEOUT = 600.0


class LockTimeout(TimeoutError):
    """Another writer held the file for longer than the caller would wait."""


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _mode_for(path: Path) -> int:
    """The permissions a new version of ``path`` gets: the old version's, else the umask's."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _sync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; renamed over ``path`` when the
    block ends normally (with ``path``'s permissions), removed when it raises."""
    path = Path(path)
    mode = _mode_for(path)
    tmp = _temp_name(path)
    try:
        yield tmp
        os.chmod(tmp, mode)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the content on disk before the name points at it
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _sync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | Path, content: str | bytes) -> None:
    """Write ``content`` (text as UTF-8) to ``path`` atomically and durably."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def remove_stale_temps(path: str | Path) -> int:
    """Remove the temporaries of ``path`` that writers killed mid-save left; call it holding
    ``path``'s lock, when no live writer can be using one. Returns how many were removed."""
    path = Path(path)
    stale = list(path.parent.glob(f".{path.name}.*.tmp"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return len(stale)


@contextmanager
def locked(path: str | Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the advisory lock of ``path`` (on ``path.lock``) for the block; reentrant in one
    process. Raises :class:`LockTimeout` after ``timeout`` seconds of waiting."""
    path = Path(path).resolve()
    lock = FileLock(path.with_name(path.name + ".lock"), is_singleton=True)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise LockTimeout(
            f"{path}: another r3mem process is writing this file (waited {timeout:g} s); "
            "try again when it is done"
        ) from None
    try:
        yield
    finally:
        lock.release()
