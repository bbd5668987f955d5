"""``r3mem chat``: a terminal chat whose memory is an R³Mem file that outlives the process.

Each message is answered by the model from what ``recall`` brings back, then the message (the
user's words; not the reply, which recalled later would drown them) is remembered: in a memory
file saved at once (write, then rename), or in a memory service (``--server``, see
:mod:`r3mem.serve.client`), so a restart finds every earlier turn. Commands:

- ``/recall QUERY``: show what the memory gives back for QUERY, best first.
- ``/forget``: forget the latest exchange still in the memory (repeat to go further back).
  Its paragraph entries leave the bank, so recall no longer finds it; the document-level
  memory, a running compression of everything written, keeps its trace.
- ``/forget all``: empty the memory entirely.
- ``/quit`` (or end of input): leave.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from .entries import Diverged
from .memory import Memory, Recalled
from .reader import Reader

RECALL_K = 3
REPLY_TOKENS = 48
HELP = "commands: /recall QUERY, /forget, /forget all, /quit"
SOURCE = "chat:"  # an exchange's entries carry source "chat:N", N counting exchanges


def exchange(meta: dict) -> int | None:
    """The exchange number an entry's meta records (source ``chat:N``), if any."""
    source = str(meta.get("source", ""))
    number = source[len(SOURCE) :]
    return int(number) if source.startswith(SOURCE) and number.isdigit() else None


def exchanges(metas: dict[int, dict]) -> dict[int, list[int]]:
    """Entry ids of each exchange, by exchange number, from the entries' meta by id."""
    found: dict[int, list[int]] = {}
    for entry_id, meta in metas.items():
        number = exchange(meta)
        if number is not None:
            found.setdefault(number, []).append(entry_id)
    return found


def _exchanges(memory: Memory) -> dict[int, list[int]]:
    return exchanges({i: entry.meta for i, entry in memory.bank.entries.items()})


def prompt(recalled: list[str], message: str, chats: bool = False) -> str | list[dict[str, str]]:
    """What the reader answers: the recalled passages, best last, then the new message; as
    chat messages for a reader tuned to chat (``chats``), else as a text to continue."""
    context = "".join(f"{text}\n" for text in reversed(recalled))
    if not chats:
        return f"{context}user: {message}\nassistant:"
    notes = f"What the user told you before (notes, best last):\n{context}" if recalled else ""
    system = f"You are a helpful assistant with a memory. {notes}Answer briefly."
    return [{"role": "system", "content": system}, {"role": "user", "content": message}]


def forget(memory: Memory, everything: bool) -> str:
    """Forget the latest exchange (or everything) in ``memory`` itself, the object the
    caller saves; says what was done."""
    if everything:
        memory.bank = memory.fresh().bank
        return "memory emptied"
    return forget_latest(_exchanges(memory), memory.bank.remove)


def forget_latest(found: dict[int, list[int]], remove: Callable[[int], Any]) -> str:
    """``remove`` every entry of the latest exchange in ``found``; says what was done."""
    if not found:
        return "nothing to forget"
    latest = max(found)
    for entry_id in found[latest]:
        remove(entry_id)
    return f"forgot exchange {latest}"


class Notes(Protocol):
    """Where the chat keeps what the user said: a memory file, or a memory service."""

    def __len__(self) -> int: ...
    def recall(self, query: str, k: int, exact: bool) -> list[Recalled]: ...
    def remember(self, message: str) -> None: ...
    def forget(self, everything: bool) -> str: ...


class FileNotes:
    """A memory file, saved (write, then rename) after every change."""

    def __init__(self, memory: Memory, path: str | Path) -> None:
        self.memory, self.path = memory, path

    def __len__(self) -> int:
        return len(self.memory.bank)

    def recall(self, query: str, k: int, exact: bool) -> list[Recalled]:
        return self.memory.recall(query, k=k, exact=exact)

    def remember(self, message: str) -> None:
        number = max(_exchanges(self.memory), default=0) + 1
        self.memory.remember([{"speaker": "user", "text": message}], source=f"{SOURCE}{number}")
        self.memory.save(self.path)

    def forget(self, everything: bool) -> str:
        done = forget(self.memory, everything)
        self.memory.save(self.path)
        return done


def _recall(notes: Notes, query: str, exact: bool, write: Callable[[str], None]) -> list[Recalled]:
    """What ``notes`` recall for ``query``. Where an exact read diverges (a file that another
    device wrote), the chat says so and reads the same hits approximately, each labelled so,
    rather than end the conversation."""
    try:
        return notes.recall(query, RECALL_K, exact)
    except Diverged as err:
        write(f"({err}: read approximately this time)")
        return notes.recall(query, RECALL_K, False)


def chat(
    notes: Notes,
    reader: Reader,
    read: Callable[[str], str] = input,
    write: Callable[[str], None] = print,
    exact: bool = True,
) -> None:
    """Run the conversation until ``/quit`` or end of input (``read`` raising EOFError);
    ``notes`` keep every message the user writes, the moment it is written."""
    write(f"{len(notes)} entries in memory. {HELP}")
    while True:
        try:
            line = read("> ").strip()
        except (EOFError, KeyboardInterrupt):
            return
        if not line:
            continue
        command, _, rest = line.partition(" ")
        if command == "/quit":
            return
        if command == "/recall":
            if not rest.strip():
                write("usage: /recall QUERY")
                continue
            for hit in _recall(notes, rest, exact, write):
                label = "" if hit.exact else f" ({hit.label})"
                write(f"[{hit.score:.3f}]{label} {hit.text}")
            continue
        if command == "/forget":
            if rest.strip() not in ("", "all"):
                write("usage: /forget, or /forget all")
                continue
            write(notes.forget(everything=rest.strip() == "all"))
            continue
        if command.startswith("/"):
            write(f"unknown command {command}; {HELP}")
            continue
        recalled = [hit.text for hit in _recall(notes, line, exact, write)]
        reply = reader.generate(prompt(recalled, line, reader.chats), REPLY_TOKENS)
        # Only the user's words are remembered: the replies, recalled later, would outrank
        # what the user said with what the model made of it.
        notes.remember(line)
        write(reply or "(no reply)")
