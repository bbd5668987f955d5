"""Resumable benchmarks. ``bench rag`` and ``bench conv`` take hours with a real reader on a
CPU; each finished unit of work (one dataset or conversation, one method) is appended to
``out/TASK.partial.jsonl`` as it ends, and ``--resume`` reuses those units when the run asks
the same thing of the same model, so an interruption loses at most the unit it was in. Each
unit keeps the code revision that made it, and the report names every revision its rows
come from. The memory a unit writes (a QA set's passages: ~20 minutes with a real model on a
CPU) is kept too, in ``out/TASK.partial/``, so a unit cut while it is scored does not write it
again. Both go once the report is written."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..memory import Memory

logger = logging.getLogger(__name__)


class Progress:
    """Finished units by key, made by ``run`` at ``revision``. ``path`` None keeps them in
    memory only (nothing to resume)."""

    def __init__(
        self,
        path: str | Path | None = None,
        run: dict | None = None,
        resume: bool = False,
        revision: str = "",
    ) -> None:
        self.path, self.revision, self.resume = (Path(path) if path else None), revision, resume
        self.memories = self.path.with_suffix("") if self.path else None  # TASK.partial/
        self.done: dict[tuple[str, ...], Any] = {}
        self.made_at: dict[tuple[str, ...], str] = {}
        self.stale = False  # the file on disk is another run's, to replace, not extend
        self.run = json.loads(json.dumps(run))  # as the file gives it back: lists, not tuples
        if self.path is None or not self.path.is_file():
            return
        if not resume:  # anew: the old file is replaced at this run's first finished unit
            logger.warning(
                "%s: an interrupted run's units, replaced from this run's first "
                "finished unit on (--resume continues that run instead)",
                path,
            )
            self.stale = True
            return
        made_by, self.done, self.made_at = _read(self.path)
        if made_by is None:  # cut before its first line ended: nothing finished
            self.path.unlink()
        elif made_by != self.run:
            keys = {**made_by, **self.run}
            changed = sorted(
                k
                for k in keys
                if k not in made_by or k not in self.run or made_by[k] != self.run[k]
            )
            raise ValueError(
                f"{self.path}: made by another run (it differs in {', '.join(changed)}); "
                "run without --resume to start over"
            )
        logger.warning("resuming: %d finished units from %s", len(self.done), self.path)

    def revisions(self) -> str:
        """The revisions the finished units were made at, oldest first: this run's alone
        (also when none finished), or every one of them when some were resumed."""
        made = list(dict.fromkeys(self.made_at.values()))  # in the order they were made
        if made in ([], [self.revision]):
            return self.revision
        return f"{', '.join(made)} (resumed)"

    def get(self, *key: str) -> Any | None:
        """What the unit ``key`` gave, if it finished before."""
        return self.done.get(key)

    def put(self, value: Any, *key: str) -> None:
        """Record a finished unit, on disk before this returns. The file starts with the first
        unit, so that a request refused before any finished leaves nothing behind."""
        self.done[key], self.made_at[key] = value, self.revision
        if self.path is None:
            return
        if self.stale or not self.path.is_file():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"run": self.run}) + "\n")
            self.stale = False
        with open(self.path, "a") as handle:
            unit = {"key": list(key), "value": value, "git_rev": self.revision}
            handle.write(json.dumps(unit) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def memory(
        self, write: Callable[[], Memory], reopen: Callable[[Path], Memory], *key: str
    ) -> Memory:
        """``write()``'s memory for the unit ``key``, saved as it is written; a resumed run
        ``reopen``s it instead. The file's name holds a digest of the run, so a memory another
        run left there is never taken for this run's."""
        if self.memories is None:
            return write()
        run = hashlib.sha256(json.dumps(self.run, sort_keys=True).encode()).hexdigest()[:12]
        name = re.sub(r"[^\w.-]", "_", "-".join(key))
        path = self.memories / f"{run}-{name}.r3mem"
        if self.resume and path.is_file():
            logger.warning("resuming: the memory of %s from %s", " ".join(key), path)
            return reopen(path)
        memory = write()
        path.parent.mkdir(parents=True, exist_ok=True)
        memory.save(path)
        return memory

    def finish(self) -> None:
        """The report is written: nothing is left to resume."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            shutil.rmtree(self.memories, ignore_errors=True)


def _read(path: Path) -> tuple[dict | None, dict[tuple[str, ...], Any], dict]:
    """The run that made the file (None: cut before its first line ended), its units and the
    revision each was made at.
    A last line without its newline was cut by the interruption: it is dropped, from the
    file too, so that the next unit starts a line of its own. Any other line that does not
    parse is an error."""
    text = path.read_text()
    end = text.rfind("\n") + 1
    complete, cut = text[:end], text[end:]
    if cut:
        logger.warning("%s: dropping an unfinished last line", path)
        path.write_text(complete)
    if not complete:
        return None, {}, {}
    try:
        header, *units = (json.loads(line) for line in complete.splitlines())
        run = header["run"]
        done = {tuple(unit["key"]): unit["value"] for unit in units}
        made_at = {tuple(unit["key"]): unit["git_rev"] for unit in units}
        if not isinstance(run, dict):
            raise TypeError(f"its first line names no run: {header}")
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a partial bench file ({error}); delete it") from error
    return run, done, made_at
