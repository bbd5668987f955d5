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

import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

logger = logging.getLogger(__name__)

# How long a writer waits for another to finish with a file before it gives up.
LOCK_TIMEOUT = 600.0


class LockTimeout(TimeoutError):
    """Another writer held the file for longer than the caller would wait."""


def temp_name(path: Path) -> Path:
    """A name beside ``path`` that no other writer uses: this process's id and a random tag."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"^Umask:\s*([0-7]+)", status, flags=re.M)[1], 8)
    except (OSError, TypeError):
        umask = os.umask(0)
        os.umask(umask)
        return umask


def _mode_for(path: Path) -> int:
    """The permissions a new version of ``path`` gets: the old version's, else the umask's."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


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
    tmp = temp_name(path)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))  # private until renamed
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
    """Remove the temporaries of ``path`` (and of no other file) that writers killed mid-save
    left: those whose process is gone. Returns how many were removed."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[0-9a-f]{{8}}\.tmp")
    removed = 0
    for tmp in path.parent.iterdir():
        found = pattern.fullmatch(tmp.name)
        if found and not _alive(int(found[1])):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process holds the lock: none of its own writes is under way
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


@contextmanager
def locked(path: str | Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the advisory lock of ``path`` (on ``path.lock``) for the block; reentrant in one
    process. Raises :class:`LockTimeout` after ``timeout`` seconds of waiting."""
    if timeout < 0:
        raise ValueError(f"the time to wait for a lock must be >= 0 seconds, got {timeout:g}")
    path = Path(path).resolve()
    lock = FileLock(path.with_name(path.name + ".lock"), is_singleton=True)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            logger.warning("%s: another process is writing it; waiting up to %g s", path, timeout)
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
