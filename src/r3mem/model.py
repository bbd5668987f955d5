"""R3MemModel: a frozen Hugging Face decoder plus R³Mem's adapters, with write and reconstruct.

One segment is one call of the memory cell (:meth:`R3MemModel.forward`):

    [M_{t-1}] ⊕ embed(x_t) ⊕ [W_1..W_m]  --couplings forward-->  logits for x_t, M_t

where M_t is the last hidden state at the write positions, rescaled to the embedding norm
(the baselines' memory modes renew M otherwise: :mod:`r3mem.modes`).
:meth:`write` loops the cell over segments; :meth:`reconstruct` reads ``[M] ⊕ [level tag]``
with every coupling inverted and generates the text back (DESIGN 2.2, 2.3).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from . import kv, modes
from .checkpoint import base_spec, fingerprint, load_adapter, read_adapter_config, save_adapter
from .config import LEVELS, R3MemConfig
from .coupling import CouplingStack, find_decoder_layers
from .generation import Sampling, generate
from .lora import DECODER, ENCODER, active_lora, inject_lora, projection_names
from .losses import lm_loss
from .state import MemoryState


@dataclass
class R3MemOutput:
    """The LM path with memory; ``logits[:, i]`` predicts token ``i + 1``, as in Hugging Face."""

    loss: torch.Tensor | None
    logits: torch.Tensor
    memory: MemoryState


class R3MemModel(nn.Module):
    """Wraps a frozen causal LM. Build with :meth:`from_base` or :meth:`from_pretrained`."""

    def __init__(self, base_model: nn.Module, config: R3MemConfig) -> None:
        super().__init__()
        if _checkpointing(base_model):
            raise ValueError(
                "wrap the base before enabling gradient checkpointing, then use "
                "r3mem.checkpointing.enable_gradient_checkpointing(model): plain recomputation "
                "runs the couplings and LoRA in the modes set at backward time"
            )
        self.config = config
        self.base = base_model
        base_model.requires_grad_(False)
        self.layers_name, layers = find_decoder_layers(base_model)
        self.spec = base_spec(base_model)
        embeddings = base_model.get_input_embeddings().weight
        hidden = self.spec["hidden_size"]
        self.kv_heads = kv.heads(base_model) if config.memory_form == "kv" else 0
        if config.lora:
            targets = projection_names(self.layers_name, layers, config.lora_target_modules)
            inject_lora(base_model, config, targets)

        rank, reversible = config.adapter_rank, config.reversible
        self.couplings = CouplingStack(layers, hidden, rank, reversible)
        separate = config.decoder == "separate"
        self.decoder_couplings = (
            CouplingStack(layers, hidden, rank, reversible) if separate else None
        )
        self.couplings.set_mode("forward")

        m, std = config.num_memory_tokens, embeddings.detach().float().std().item()
        self.write_embeddings = nn.Parameter(torch.randn(m, hidden) * std)
        self.initial_memory = nn.Parameter(torch.randn(m, hidden) * std)
        self.level_embeddings = nn.Parameter(torch.randn(len(LEVELS), hidden) * std)
        # Memory vectors are fed back as input embeddings, so they live at the embeddings' scale.
        self.register_buffer(
            "embed_norm", embeddings.detach().float().norm(dim=-1).mean(), persistent=False
        )
        self.fingerprint = fingerprint(self.spec, config, embeddings)
        # Adapters take the base model's device and dtype, so a bf16 base stays bf16 end to end.
        for name, param in self.named_parameters():
            if not name.startswith("base."):
                param.data = param.data.to(device=embeddings.device, dtype=embeddings.dtype)

    # ----------------------------------------------------------------------------- construction

    @classmethod
    def from_base(cls, base_model: nn.Module, config: R3MemConfig | None = None) -> R3MemModel:
        """Freeze ``base_model`` and attach fresh adapters; at init the result equals the base.

        Like PEFT, LoRA layers are injected into ``base_model`` in place.
        """
        return cls(base_model, config or R3MemConfig())

    @property
    def device(self) -> torch.device:
        return self.write_embeddings.device

    @property
    def embed_tokens(self) -> nn.Module:
        return self.base.get_input_embeddings()

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    # ----------------------------------------------------------------------------- memory

    def init_memory(self, batch_size: int, level: str = "document") -> MemoryState:
        """The learned initial memory, repeated for each row of the batch.

        In the ``kv`` form it is the keys and values the encoder computes for the learned
        initial vectors, so both forms train the same parameters.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        memory = modes.initial(self.config, self.initial_memory, batch_size)
        if self.kv_heads:
            with self._path("write"):
                out = self.base.base_model(inputs_embeds=memory, use_cache=True)
            memory = kv.pack(out.past_key_values, self.config.num_memory_tokens)
        seen = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        return MemoryState(memory, level, seen, self.fingerprint)

    def _check_state(self, state: MemoryState) -> None:
        if not isinstance(state, MemoryState):
            raise TypeError(f"expected a MemoryState, got {type(state).__name__}")
        if state.fingerprint != self.fingerprint:
            raise ValueError(
                "this memory was written by another base model or config "
                f"(fingerprint {state.fingerprint[:12]} != {self.fingerprint[:12]})"
            )

    @contextmanager
    def _path(self, direction: str) -> Iterator[None]:
        """``write``: couplings forward, encoder LoRA. ``read``: the decoder the config names."""
        if direction == "write":
            with self.couplings.use("forward"):
                yield
            return
        decoder = self.config.decoder
        lora = {"inverse": ENCODER, "separate": DECODER, "frozen": None}[decoder]
        lora_switch = active_lora(self.base, lora) if self.config.lora else nullcontext()
        second = self.decoder_couplings.use("forward") if decoder == "separate" else nullcontext()
        first = self.couplings.use("inverse" if decoder == "inverse" else "off")
        with lora_switch, first, second:
            yield

    @contextmanager
    def bare(self) -> Iterator[None]:
        """The base model alone (couplings and LoRA off): to read or generate as it would."""
        lora_switch = active_lora(self.base, None) if self.config.lora else nullcontext()
        with self.couplings.use("off"), lora_switch:
            yield

    def _cache(self, memory: torch.Tensor) -> DynamicCache:
        layers = self.spec["num_layers"]
        return kv.unpack(memory, layers, self.kv_heads, self.base.config)

    def _cell(
        self,
        memory: torch.Tensor | None,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One segment through the encoder: ``[M] ⊕ x ⊕ [W]``; ``kv``: ``[tag] ⊕ x ⊕ [W]`` over M.

        Returns the hidden states from the position before the text to its last token
        (``[B, 1 + T, d]``; ``[B, T, d]`` with nothing before the text) and the new memory
        (``[B, m, width]`` in the recurrent mode).
        """
        batch, length, _ = inputs_embeds.shape
        m = self.config.num_memory_tokens if modes.writes(self.config) else 0
        write = self.write_embeddings[:m].unsqueeze(0).expand(batch, -1, -1)
        ones = attention_mask.new_ones(batch, m)
        parts, masks, past = [inputs_embeds, write], [attention_mask, ones], None
        if memory is not None and self.kv_heads:
            past = self._cache(memory)
            parts.insert(0, self.level_embeddings[0].expand(batch, 1, -1))  # the document tag
            masks = [ones, ones[:, :1], *masks]
        elif memory is not None:
            parts.insert(0, memory.to(inputs_embeds.dtype))
            masks.insert(0, modes.slot_mask(memory))
        embeds, mask = torch.cat(parts, dim=1), torch.cat(masks, dim=1)  # [B, prefix + T + m, d]
        # Text positions count real tokens; the write tokens sit at fixed positions after the
        # text's start (segment_length + j), however long the text: each slot then sees the
        # text, and the decoder sees each slot, at the same relative offsets (RoPE) in every
        # segment. Measured on the shipped base (16 -> 8 autoencoding, 750 steps): greedy
        # 0.91 against 0.80 when the write tokens followed the last real token.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -embeds.shape[1] :]
        if m:
            text_start = positions[:, -(length + m), None]  # [B, 1]
            offset = max(self.config.segment_length, length)
            slots = torch.arange(m, device=positions.device) + offset
            positions = torch.cat([positions[:, :-m], text_start + slots], dim=1)
        with self._path("write"):
            out = self.base.base_model(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=past,
                use_cache=bool(self.kv_heads),
            )
        prefix = embeds.shape[1] - length - m
        text = out.last_hidden_state[:, max(prefix - 1, 0) : prefix + length]
        if self.kv_heads:
            return text, kv.pack(out.past_key_values, m)
        written = out.last_hidden_state[:, prefix + length :].float()  # [B, m, d]
        written = (F.normalize(written, dim=-1) * self.embed_norm).to(inputs_embeds.dtype)
        if memory is None:
            memory = written[:, :0]  # nothing was read before the text
        return text, modes.renew(self.config, memory, written, inputs_embeds, attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        memory: MemoryState | None = None,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> R3MemOutput:
        """One segment on the LM path: read ``memory`` (None: no memory), score the text, write.

        With memory, the first token is scored from the memory's last slot (a window's last
        past token), so no token of a stream goes unscored at a segment boundary.
        """
        embeds, mask = self._embed(input_ids, inputs_embeds, attention_mask)
        if memory is not None:
            self._check_state(memory)
            _check_batch(memory, embeds.shape[0])
        hidden, new_memory = self._cell(None if memory is None else memory.memory, embeds, mask)
        logits = self.base.get_output_embeddings()(hidden)
        first_scored = hidden.shape[1] > embeds.shape[1]  # something was read before the text
        loss = None
        if labels is not None:
            if first_scored:
                ignore = labels.new_full((labels.shape[0], 1), -100)
                loss = lm_loss(logits, torch.cat([ignore, labels], dim=1))
            else:
                loss = lm_loss(logits, labels)
        if first_scored:
            logits = logits[:, 1:]
        previous = memory if memory is not None else self.init_memory(embeds.shape[0])
        state = MemoryState(
            new_memory, previous.level, previous.tokens_seen + mask.sum(-1), self.fingerprint
        )
        return R3MemOutput(loss=loss, logits=logits, memory=state)

    def _embed(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate the text and return (embeddings [B, T, d], mask [B, T])."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            if not isinstance(input_ids, torch.Tensor):
                raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
            if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
                raise TypeError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be [batch, length], got {tuple(input_ids.shape)}")
            vocab = self.spec["vocab_size"]
            if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= vocab):
                raise ValueError(f"input_ids must lie in [0, {vocab}), the base model's vocabulary")
            shape = input_ids.shape
        else:
            if inputs_embeds.dim() != 3 or not inputs_embeds.dtype.is_floating_point:
                raise ValueError("inputs_embeds must be a floating [batch, length, d] tensor")
            shape = inputs_embeds.shape[:2]
        if shape[0] == 0 or shape[1] == 0:
            raise ValueError(f"empty input: got shape {tuple(shape)}; write at least one token")
        if attention_mask is None:
            attention_mask = torch.ones(shape, dtype=torch.long, device=self.device)
        elif tuple(attention_mask.shape) != tuple(shape):
            raise ValueError(
                f"attention_mask {tuple(attention_mask.shape)} does not match input {tuple(shape)}"
            )
        attention_mask = attention_mask.long()
        if (attention_mask.sum(-1) == 0).any():
            raise ValueError("empty input: a row of attention_mask has no tokens")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        return inputs_embeds, attention_mask

    # ----------------------------------------------------------------------------- write / read

    def write(
        self,
        state: MemoryState,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> MemoryState:
        """Forward invocation: absorb ``input_ids`` into ``state``, ``segment_length`` at a time.

        Rows whose remaining tokens are all padding keep their memory unchanged (in the
        accumulate mode they still add one summary, of the memory alone: every row grows
        alike). Gradients flow through (training uses this); wrap in ``torch.no_grad()`` for
        inference.
        """
        self._check_state(state)
        embeds, mask = self._embed(input_ids, None, attention_mask)
        _check_batch(state, embeds.shape[0])
        step = self.config.segment_length
        memory, seen = state.memory, state.tokens_seen
        keep = self.config.memory_mode == "recurrent"
        for start in range(0, embeds.shape[1], step):
            chunk_mask = mask[:, start : start + step]
            has_text = chunk_mask.sum(-1) > 0
            if keep:  # the row's output is thrown away: any mask will do, one with tokens is safe
                chunk_mask = torch.where(has_text[:, None], chunk_mask, torch.ones_like(chunk_mask))
            _, new = self._cell(memory, embeds[:, start : start + step], chunk_mask)
            memory = torch.where(has_text[:, None, None], new, memory) if keep else new
        seen = seen + mask.sum(-1)
        return MemoryState(memory, state.level, seen, self.fingerprint)

    def _read_inputs(
        self, state: MemoryState, level: str, cue_ids: torch.Tensor | None
    ) -> tuple[torch.Tensor, DynamicCache | None]:
        """What the decoder reads before the text: ``[M] ⊕ [level tag] ⊕ embed(cue)`` as
        embeddings, or in the ``kv`` form ``[level tag] ⊕ embed(cue)`` over a cache holding M."""
        self._check_state(state)
        if not modes.writes(self.config):
            raise ValueError(
                f"memory_mode='{self.config.memory_mode}' keeps no written memory to read back"
            )
        if level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
        batch = state.batch_size
        tag = self.level_embeddings[LEVELS.index(level)].expand(batch, 1, -1)
        parts, past = [tag], None
        if self.kv_heads:
            past = self._cache(state.memory.to(tag.dtype))
        else:
            parts.insert(0, state.memory.to(tag.dtype))
        if cue_ids is not None:
            cue, _ = self._embed(cue_ids, None, None)
            _check_batch(state, cue.shape[0])
            parts.append(cue)
        return torch.cat(parts, dim=1), past

    def decode_logits(
        self,
        state: MemoryState,
        target_ids: torch.Tensor,
        level: str = "paragraph",
        cue_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced backward invocation: ``logits[:, i]`` predicts ``target_ids[:, i]``.

        Right padding in ``target_ids`` needs no mask: causal attention never looks ahead.
        """
        prefix, past = self._read_inputs(state, level, cue_ids)
        text, _ = self._embed(target_ids, None, None)
        embeds = torch.cat([prefix, text[:, :-1]], dim=1)
        with self._path("read"):
            logits = self.base(inputs_embeds=embeds, past_key_values=past).logits
        return logits[:, prefix.shape[1] - 1 :]

    @torch.no_grad()
    def reconstruct(
        self,
        state: MemoryState,
        max_new_tokens: int,
        level: str = "paragraph",
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        cue_ids: torch.Tensor | None = None,
        eos_token_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Backward invocation: generate the text back from memory, batched, with the KV cache.

        Returns ``[batch, n]`` token ids, ``n <= max_new_tokens``; rows that met ``eos_token_id``
        are padded with it.
        """
        prefix, past = self._read_inputs(state, level, cue_ids)
        with self._path("read"):
            return generate(
                self.base,
                prefix,
                past,
                max_new_tokens,
                Sampling(do_sample, temperature, top_k, eos_token_id, generator),
            )

    # ----------------------------------------------------------------------------- save / load

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``adapter_config.json`` and ``adapter_model.safetensors``; never the base."""
        save_adapter(self, directory)

    @staticmethod
    def base_name(directory: str | Path) -> str:
        """The base model (hub name or path) an adapter directory was trained on."""
        return read_adapter_config(directory)["base_model"]["name_or_path"]

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, base_model: nn.Module | str | None = None
    ) -> R3MemModel:
        """Load adapters saved by :meth:`save_pretrained` onto ``base_model`` (a model, a hub
        name or a local path; None: the base named in the adapter config)."""
        return load_adapter(cls, directory, base_model)


def _check_batch(state: MemoryState, batch: int) -> None:
    if state.batch_size != batch:
        raise ValueError(f"batch mismatch: memory holds {state.batch_size} rows, input has {batch}")


def _checkpointing(base_model: nn.Module) -> bool:
    """Whether activation (gradient) checkpointing is on; transformers 5 renamed the flag."""
    flag = getattr(base_model, "is_activation_checkpointing", None)
    return bool(getattr(base_model, "is_gradient_checkpointing", False) if flag is None else flag)
