"""R3MemModel: the memory cell (:mod:`r3mem.cell`) run over many segments, and its files.

As RMT's recurrent wrapper around its memory cell, :func:`recur` is the one loop that carries
a memory from segment to segment, for writing, training, ``bench lm``, ``Memory`` and the
demo alike. It owns the rules they share:

- a segment may hold fewer rows than the memory: the rows still reading are a prefix (books
  sorted longest first); the others' memory is dropped;
- in the recurrent mode a row whose segment is all padding keeps its memory (in the growing
  modes it still takes the segment in, as padding: every row grows alike);
- ``truncate=k`` detaches the memory every k segments (truncated BPTT); None keeps the graph
  over the whole run, as a training window does.

Public surface (DESIGN 3): ``from_base``, ``init_memory``, ``write``, ``reconstruct``,
``forward``, ``generate``, ``save_pretrained``, ``from_pretrained``; ``write_alone`` and
``write_in_order`` are the two ways ``Memory`` writes segments (entries; the document).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from .cell import MemoryCell, check_batch
from .checkpoint import (
    base_name,
    base_spec,
    check_base,
    load_base,
    load_trainable,
    read_adapter_config,
    read_adapter_weights,
    save_adapter,
)
from .config import R3MemConfig
from .generation import Sampling, generate
from .losses import IGNORE
from .segment import pad_rows
from .state import MemoryState

Chunk = tuple[torch.Tensor, torch.Tensor]  # a segment's token ids [B, T] and mask [B, T]


@dataclass
class Step:
    """The cell's output for one segment of a run: the memory after it and, when scored, the
    logits of its text (``logits[:, i]`` predicts token ``i + 1``) and their LM loss."""

    memory: MemoryState
    logits: torch.Tensor | None = None
    loss: torch.Tensor | None = None


def recur(
    model: MemoryCell,
    state: MemoryState,
    segments: Iterable[Chunk],
    *,
    score: bool = False,
    truncate: int | None = None,
) -> Iterator[Step]:
    """Run ``model`` over ``segments`` from ``state``, one :class:`Step` per segment.

    ``score``: also the LM path's logits and loss (after a memory, a segment's first token
    is scored from what was read before it). Without, the cell only compresses.
    """
    model.check_state(state)
    keep = model.config.memory_mode == "recurrent"
    for index, (ids, mask) in enumerate(segments):
        rows = ids.shape[0]
        if rows > state.batch_size:
            check_batch(state, rows)
        if rows < state.batch_size:  # the rows that finished leave the batch
            state = replace(state, memory=state.memory[:rows], tokens_seen=state.tokens_seen[:rows])
        embeds, mask = model.embed_text(ids, None, mask, empty_rows=True)
        has_text = mask.sum(-1) > 0
        cell_mask = mask
        if keep:  # the row's output is thrown away: any mask will do, one with tokens is safe
            cell_mask = torch.where(has_text[:, None], mask, torch.ones_like(mask))
        if score:
            segment, reading = model.lm_pass(state.memory, embeds, cell_mask)
        else:
            segment = model.compress(state.memory, embeds, cell_mask)
        memory = segment.memory
        if keep:
            memory = torch.where(has_text[:, None, None], memory, state.memory)
        seen = state.tokens_seen + mask.sum(-1)
        step = Step(replace(state, memory=memory, tokens_seen=seen))
        if score:
            step.logits, step.loss = model.score(reading, ids.masked_fill(mask == 0, IGNORE))
        yield step
        state = step.memory
        if truncate is not None and (index + 1) % truncate == 0:
            state = state.detach()


def one_row(segments: Iterable[list[int] | torch.Tensor], device: torch.device) -> list[Chunk]:
    """Segments of one text (token ids each) as the batch-of-one pairs :func:`recur` reads."""
    pairs = []
    for ids in segments:
        ids = torch.as_tensor(ids, dtype=torch.long, device=device)[None]  # [1, T]
        pairs.append((ids, torch.ones_like(ids)))
    return pairs


def last(steps: Iterable[Step]) -> Step:
    """The final step of a run: its memory is the memory after every segment."""
    final = None
    for final in steps:  # noqa: B007 (the loop runs the recurrence; the last step is kept)
        pass
    if final is None:
        raise ValueError("no segment to run the memory over")
    return final


class R3MemModel(MemoryCell):
    """Wraps a frozen causal LM. Build with :meth:`from_base` or :meth:`from_pretrained`."""

    @classmethod
    def from_base(cls, base_model: nn.Module, config: R3MemConfig | None = None) -> R3MemModel:
        """Freeze ``base_model`` and attach fresh adapters; at init the result equals the base.

        Like PEFT, LoRA layers are injected into ``base_model`` in place.
        """
        return cls(base_model, config or R3MemConfig())

    def write(
        self,
        state: MemoryState,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> MemoryState:
        """Forward invocation: absorb ``input_ids`` ``[B, T]`` into ``state``,
        ``segment_length`` tokens at a time (rows with nothing left keep their memory, as
        :func:`recur` says). Gradients flow through (training uses this); wrap in
        ``torch.no_grad()`` for inference."""
        self.check_state(state)
        _, mask = self.embed_text(input_ids, None, attention_mask)
        check_batch(state, input_ids.shape[0])
        width = self.config.segment_length
        chunks = [
            (input_ids[:, start : start + width], mask[:, start : start + width])
            for start in range(0, input_ids.shape[1], width)
        ]
        return last(recur(self, state, chunks)).memory

    def write_alone(self, rows: Sequence[list[int]]) -> MemoryState:
        """Each row of token ids compressed alone from the initial paragraph memory, in one
        right-padded batch: a paragraph entry, or a query scored against entries."""
        input_ids, mask = pad_rows(list(rows))
        state = self.init_memory(len(rows), "paragraph")
        return self.write(state, input_ids.to(self.device), attention_mask=mask.to(self.device))

    def write_in_order(
        self, state: MemoryState, rows: Sequence[list[int] | torch.Tensor]
    ) -> MemoryState:
        """``state`` (one row) after reading ``rows`` (segments' token ids) in order, one
        recurrent step each: the document memory; no rows leave it as it is."""
        for step in recur(self, state, one_row(rows, self.device)):
            state = step.memory
        return state

    @torch.no_grad()
    def generate(
        self,
        state: MemoryState,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        *,
        eos_token_id: int | None = None,
    ) -> torch.Tensor:
        """The LM path continued: read ``state`` as the next segment would, then
        ``input_ids`` ``[B, T]`` (no padding), then up to ``max_new_tokens`` greedy ids per
        row ``[B, n]`` with the KV cache (rows that met ``eos_token_id`` padded with it).
        What a reader of the memory answers: the paper's use of the memory in RAG."""
        self.check_state(state)
        embeds, _ = self.embed_text(input_ids, None, None)
        check_batch(state, embeds.shape[0])
        context = self.form.context(self, state.memory, embeds.dtype)
        if not bool(context.mask.all()):
            raise ValueError("generate reads a memory with no padding slots (one row at a time)")
        prefix = torch.cat([context.embeds, embeds], dim=1)
        with self.direction("compress" if self.config.lm_reader == "adapted" else "bare"):
            return generate(
                self.base, prefix, context.past, max_new_tokens, Sampling(eos_token_id=eos_token_id)
            )

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``adapter_config.json`` and ``adapter_model.safetensors``; never the base."""
        base_config = getattr(self.base, "config", None)
        meta = {
            "base_model": {**self.spec, "name_or_path": getattr(base_config, "name_or_path", "")},
            "fingerprint": self.fingerprint,
            "r3mem_config": self.config.to_dict(),
        }
        save_adapter(directory, meta, self.trainable_parameters())

    @staticmethod
    def base_name(directory: str | Path) -> str:
        """The base model (hub name or path) an adapter directory was trained on."""
        return base_name(directory)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, base_model: nn.Module | str | None = None
    ) -> R3MemModel:
        """Load adapters saved by :meth:`save_pretrained` onto ``base_model`` (a model, a hub
        name or a local path; None: the base named in the adapter config)."""
        meta = read_adapter_config(directory)
        if base_model is None:
            base_model = meta["base_model"]["name_or_path"]
            if not base_model:
                raise ValueError(f"{directory}: the adapter names no base model; pass base_model=")
        if isinstance(base_model, (str, os.PathLike)):
            base_model = load_base(base_model)
        check_base(meta, base_spec(base_model), directory)
        model = cls.from_base(base_model, R3MemConfig.from_dict(meta["r3mem_config"]))
        weights = read_adapter_weights(directory)
        load_trainable(
            model.trainable_parameters(), weights, Path(directory) / "adapter_model.safetensors"
        )
        return model
