"""What a memory file must hold: its format name, the dtypes an entry may be stored in, and
the checks that find the first wrong field of a file before any of it is used (DESIGN 3).

A memory file is one safetensors file (:meth:`r3mem.bank.MemoryBank.to_file_parts`); a file
from another model, an older format or a damaged disk is refused here with the field named,
so a bad file never becomes a half-loaded bank.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from .checkpoint import adapter_digest
from .files import atomic_path, locked, remove_stale_temps
from .segment import parts_needed
from .tensorfile import all_finite, write_tensors

if TYPE_CHECKING:
    from .model import R3MemModel

FORMAT = "r3mem.Memory/1"

ENTRY_DTYPES = {
    "float8": torch.float8_e4m3fn,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
}


class BankFileError(ValueError):
    """A memory file's field is missing or wrong; the message names the field."""


def _expect(ok: bool, field: str, why: str) -> None:
    if not ok:
        raise BankFileError(f"{field}: {why}")


def is_int(value: Any, low: int, high: int | None = None) -> bool:
    """An int (not a bool) in ``[low, high)``."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    return ok and (high is None or value < high)


def _check_tensor(tensors: dict[str, torch.Tensor], name: str, shape: tuple, dtypes) -> None:
    _expect(name in tensors, name, "missing")
    tensor = tensors[name]
    _expect(tuple(tensor.shape) == shape, name, f"shape {tuple(tensor.shape)}, expected {shape}")
    _expect(tensor.dtype in dtypes, name, f"dtype {tensor.dtype}")
    if tensor.is_floating_point():
        _expect(all_finite(tensor), name, "holds values that are not finite")


def stored_entry_tokens(meta: dict[str, Any], segment_length: int) -> Any:
    """The entry length a memory file keeps (files saved before it was kept: whole segments)."""
    return meta.get("entry_tokens", segment_length)


def stored_part_tokens(meta: dict[str, Any], entry_tokens: Any) -> Any:
    """The part length a memory file keeps (written only when not its entry length)."""
    return meta.get("part_tokens", entry_tokens)


def check_meta(
    meta: Any, tensors: dict[str, torch.Tensor], shape: tuple, model: R3MemModel
) -> list[dict[str, Any]]:
    """The entry records of a memory file's metadata, once every field and tensor of the
    file has been found consistent with itself and with ``model``."""
    _expect(isinstance(meta, dict), "metadata", "not a JSON object")
    _expect(meta.get("format") == FORMAT, "format", f"{meta.get('format')!r}, expected {FORMAT}")
    _expect(isinstance(meta.get("fingerprint"), str), "fingerprint", "missing or not a string")
    budget = meta.get("budget_entries")
    _expect(budget is None or is_int(budget, 1), "budget_entries", f"{budget!r}")
    _expect(meta.get("entry_dtype") in ENTRY_DTYPES, "entry_dtype", f"{meta.get('entry_dtype')!r}")
    _expect(is_int(meta.get("next_id"), 0), "next_id", f"{meta.get('next_id')!r}")
    records = meta.get("entries")
    _expect(isinstance(records, list), "entries", "not a list")
    floats = (torch.float16, torch.bfloat16, torch.float32)
    _check_tensor(tensors, "document", shape, floats)
    _check_tensor(tensors, "document_tokens_seen", (1,), (torch.int64, torch.int32))
    _expect(int(tensors["document_tokens_seen"][0]) >= 0, "document_tokens_seen", "negative")
    unknown = sorted(set(tensors) - {"document", "document_tokens_seen", "entries"})
    _expect(not unknown, "tensors", f"unknown {unknown}")
    _expect(budget is None or len(records) <= budget, "entries", f"more than {budget}")
    parts = [r.get("parts", 1) if isinstance(r, dict) else 1 for r in records]
    _expect(all(is_int(n, 1) for n in parts), "entries.parts", "not all integers of at least 1")
    if records:
        stored = (sum(parts), *shape[1:])
        _check_tensor(tensors, "entries", stored, (ENTRY_DTYPES[meta["entry_dtype"]],))
    else:
        _expect("entries" not in tensors, "entries", "tensors stored for no entry records")
    length, vocab = model.config.segment_length, model.spec["vocab_size"]
    entry_tokens = stored_entry_tokens(meta, length)
    ok = is_int(entry_tokens, 1, length + 1)
    _expect(ok, "entry_tokens", f"{entry_tokens!r}, not 1..{length}")
    part_tokens = stored_part_tokens(meta, entry_tokens)
    ok = is_int(part_tokens, 1, length + 1)
    _expect(ok, "part_tokens", f"{part_tokens!r}, not 1..{length}")
    previous = -1
    keys = {"id", "tokens", "entities", "corrections", "checksum", "meta"}
    optional = {"keywords", "parts"}  # absent from files written before them
    for index, record in enumerate(records):
        field = f"entries[{index}]"
        ok = isinstance(record, dict) and set(record) - optional == keys
        _expect(ok, field, f"keys must be {keys}, and {optional} at most")
        entry_id, tokens = record["id"], record["tokens"]
        _expect(
            is_int(entry_id, 0, meta["next_id"]),
            f"{field}.id",
            f"{entry_id!r} (next_id {meta['next_id']})",
        )
        _expect(entry_id != previous, f"{field}.id", f"{entry_id} appears twice")
        _expect(entry_id > previous, f"{field}.id", "not after the one before")
        previous = entry_id
        _expect(is_int(tokens, 1, length + 1), f"{field}.tokens", f"{tokens!r}, not 1..{length}")
        # as remember cuts it, or one part (a window written before parts were)
        ok = parts[index] in (1, parts_needed(tokens, part_tokens))
        _expect(ok, f"{field}.parts", f"{parts[index]} parts of {tokens} tokens")
        entities = record["entities"]
        ok = isinstance(entities, list) and all(isinstance(e, str) for e in entities)
        _expect(ok, f"{field}.entities", "not a list of strings")
        fixes = record["corrections"]
        ok = isinstance(fixes, list) and all(
            isinstance(fix, list)
            and len(fix) == 2
            and is_int(fix[0], 0, tokens)
            and is_int(fix[1], 0, vocab)
            for fix in fixes
        )
        ok = ok and len({fix[0] for fix in fixes}) == len(fixes)
        _expect(ok, f"{field}.corrections", f"not distinct [position < {tokens}, token < {vocab}]")
        _expect(is_int(record["checksum"], 0, 2**32), f"{field}.checksum", "not a CRC-32")
        _expect(isinstance(record["meta"], dict), f"{field}.meta", "not a JSON object")
        words = record.get("keywords", {})
        ok = isinstance(words, dict) and all(
            isinstance(w, str) and is_int(n, 1) for w, n in words.items()
        )
        _expect(ok, f"{field}.keywords", "not a map of words to counts of at least 1")
    return records


def read_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A memory file's tensors and metadata, once the metadata names the model's
    fingerprint, directory and adapter digest (the rest :func:`check_meta` checks against
    the model that opens it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such memory file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads(handle.metadata()["r3mem"])
        tensors = load_file(str(path))
        _, recorded, digest = (meta[key] for key in ("fingerprint", "model_dir", "adapter_digest"))
        if not isinstance(recorded, str | None) or not isinstance(digest, str):
            raise TypeError("model_dir or adapter_digest is not a string")
    except (SafetensorError, KeyError, TypeError, ValueError, OSError, RecursionError) as err:
        raise ValueError(f"{path}: not a valid r3mem memory file ({err})") from err
    return tensors, meta


def write_file(
    path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any], timeout: float
) -> None:
    """Write a memory file under its lock, atomically (whole or not at all), after removing
    the temporaries writers killed mid-save left beside it: :func:`read_file`'s inverse."""
    path = check_target(path)
    with locked(path, timeout):
        remove_stale_temps(path)
        with atomic_path(path) as tmp:
            write_tensors(tmp, tensors, {"r3mem": json.dumps(meta)})


def model_meta(
    model: R3MemModel, model_dir: Path | None, entry_tokens: int, part_tokens: int
) -> dict[str, Any]:
    """What a memory file records of the model that wrote it, beside the bank's fields:
    where to find it again, its adapters' digest, the entry length it cut texts at and the
    part length it compressed at (only when not the entry length, as files before it)."""
    meta = {
        "model_dir": None if model_dir is None else str(model_dir),
        "adapter_digest": adapter_digest(model.trainable_parameters()),
        "entry_tokens": entry_tokens,
    }
    return meta if part_tokens == entry_tokens else {**meta, "part_tokens": part_tokens}


def check_written_by(
    path: str | Path, meta: dict[str, Any], model: R3MemModel, model_dir: Path | None
) -> None:
    """Refuse a file :func:`read_file` read unless ``model`` (loaded from ``model_dir``)
    wrote it: the same base model and config (fingerprint) and the same adapter weights."""
    if meta["fingerprint"] != model.fingerprint:
        raise ValueError(
            f"{path}: this memory was written by another base model or config "
            f"(fingerprint {str(meta['fingerprint'])[:12]} != {model.fingerprint[:12]})"
        )
    if meta["adapter_digest"] != adapter_digest(model.trainable_parameters()):
        raise ValueError(
            f"{path}: this memory was written through other adapter weights than "
            f"{model_dir}'s; open it with the model that wrote it"
        )


def check_target(path: str | Path) -> Path:
    """``path`` as a memory file can be written there: in an existing folder, not a folder."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; a memory file is one file")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: no folder {path.parent} to write the memory file in")
    return path
