"""``r3mem chat``: a terminal chat whose memory is an R³Mem file that outlives the process.

Each message is answered by the model from what ``recall`` brings back, then the message (the
user's words; not the reply, which recalled later would drown them) is remembered and the
file saved (write, then rename), so a restart finds every earlier turn. Commands:

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

from .memory import Memory
from .reader import Reader

RECALL_K = 3
REPLY_TOKENS = 48
HELP = "commands: /recall QUERY, /forget, /forget all, /quit"
SOURCE = "chat:"  # an exchange's entries carry source "chat:N", N counting exchanges


def _exchanges(memory: Memory) -> dict[int, list[int]]:
    """Entry ids of each exchange still in the bank, by exchange number."""
    found: dict[int, list[int]] = {}
    for entry_id, entry in memory.bank.entries.items():
        source = str(entry.meta.get("source", ""))
        if source.startswith(SOURCE) and source[len(SOURCE) :].isdigit():
            found.setdefault(int(source[len(SOURCE) :]), []).append(entry_id)
    return found


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
    exchanges = _exchanges(memory)
    if not exchanges:
        return "nothing to forget"
    latest = max(exchanges)
    for entry_id in exchanges[latest]:
        memory.bank.remove(entry_id)
    return f"forgot exchange {latest}"


def chat(
    memory: Memory,
    path: str | Path,
    reader: Reader,
    read: Callable[[str], str] = input,
    write: Callable[[str], None] = print,
    exact: bool = False,
) -> Memory:
    """Run the conversation until ``/quit`` or end of input (``read`` raising EOFError);
    the memory file at ``path`` is saved after every change. Returns the final memory."""
    write(f"{len(memory.bank)} entries in memory. {HELP}")
    while True:
        try:
            line = read("> ").strip()
        except (EOFError, KeyboardInterrupt):
            return memory
        if not line:
            continue
        command, _, rest = line.partition(" ")
        if command == "/quit":
            return memory
        if command == "/recall":
            if not rest.strip():
                write("usage: /recall QUERY")
                continue
            for hit in memory.recall(rest, k=RECALL_K, exact=exact):
                label = "" if hit.exact else f" ({hit.label})"
                write(f"[{hit.score:.3f}]{label} {hit.text}")
            continue
        if command == "/forget":
            if rest.strip() not in ("", "all"):
                write("usage: /forget, or /forget all")
                continue
            done = forget(memory, everything=rest.strip() == "all")
            memory.save(path)
            write(done)
            continue
        if command.startswith("/"):
            write(f"unknown command {command}; {HELP}")
            continue
        recalled = [hit.text for hit in memory.recall(line, k=RECALL_K, exact=exact)]
        reply = reader.generate(prompt(recalled, line, reader.chats), REPLY_TOKENS)
        # Only the user's words are remembered: the replies, recalled later, would outrank
        # what the user said with what the model made of it.
        number = max(_exchanges(memory), default=0) + 1
        memory.remember([{"speaker": "user", "text": line}], source=f"{SOURCE}{number}")
        memory.save(path)
        write(reply or "(no reply)")
