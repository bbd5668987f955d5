"""The memory cell: a frozen Hugging Face decoder plus R³Mem's adapters, one segment at a time.

Every pass names its direction (DESIGN 2.2, 2.3):

    compress  [M_{t-1}] ⊕ embed(x_t) ⊕ [W_1..W_m]  --couplings forward-->  hidden of x_t, M_t
    expand    [M] ⊕ [level tag] ⊕ text            --couplings inverted-->  logits of the text

What a segment reads before its text and how M renews depend on the memory form and mode
(:mod:`r3mem.forms`, one strategy each). Many segments are :mod:`r3mem.model`'s business.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache

from .checkpoint import base_spec, fingerprint
from .config import LEVELS, R3MemConfig
from .coupling import CouplingStack, find_decoder_layers
from .forms import Context, memory_form
from .generation import CACHE, Processor, Sampling, generate
from .lora import DECODER, ENCODER, active_lora, inject_lora, projection_names
from .losses import IGNORE, lm_loss
from .state import MemoryState

# Set on a base model an R3MemModel has taken over: a second wrap of it would find LoRA in it.
WRAPPED = "r3mem_wrapped"
DIRECTIONS = ("compress", "expand", "bare")


@dataclass
class Compressed:
    """One segment compressed: the hidden states from the position before the text (when
    something was read before it: ``after_context``) to its last token, and the new memory."""

    hidden: torch.Tensor
    memory: torch.Tensor | None  # None: a pass that reads only (``compress(write=False)``)
    after_context: bool


@dataclass
class R3MemOutput:
    """The LM path with memory; ``logits[:, i]`` predicts token ``i + 1``, as in Hugging Face."""

    loss: torch.Tensor | None
    logits: torch.Tensor
    memory: MemoryState


class MemoryCell(nn.Module):
    """A frozen causal LM with R³Mem's adapters, handling one segment in a named direction.

    Its parameters (and their names in saved adapters) are R3MemModel's; build that."""

    def __init__(self, base_model: nn.Module, config: R3MemConfig) -> None:
        super().__init__()
        if _checkpointing(base_model):
            raise ValueError(
                "wrap the base before enabling gradient checkpointing, then use "
                "r3mem.recompute.enable_gradient_checkpointing(model): plain recomputation "
                "runs the couplings and LoRA in the modes set at backward time"
            )
        if getattr(base_model, WRAPPED, False):
            raise ValueError(
                "this base model is wrapped already: an R3MemModel takes its base over (LoRA "
                "and couplings go into its layers); load the base again for another model"
            )
        self.config = config
        self.base = base_model
        base_model.requires_grad_(False)
        self.layers_name, layers = find_decoder_layers(base_model)
        self.spec = base_spec(base_model)
        embeddings = base_model.get_input_embeddings().weight
        hidden = self.spec["hidden_size"]
        self.form = memory_form(config, base_model, len(layers))  # before LoRA changes the base
        if config.lora:
            targets = projection_names(self.layers_name, layers, config.lora_target_modules)
            inject_lora(base_model, config, targets)

        rank, reversible = config.adapter_rank, config.reversible
        self.couplings = CouplingStack(layers, hidden, rank, reversible)
        separate = config.decoder == "separate"
        self.decoder_couplings = (
            CouplingStack(layers, hidden, rank, reversible) if separate else None
        )
        self.couplings.set_mode("forward")  # at rest, as the encoder LoRA is: the compress path

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
        setattr(base_model, WRAPPED, True)

    # ----------------------------------------------------------------------------- parts

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
        """The memory before any text, repeated for each row of the batch (in the ``kv`` form,
        the keys and values the encoder computes for the learned initial vectors)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        memory = self.form.initial(self, batch_size)
        seen = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        return MemoryState(memory, level, seen, self.fingerprint)

    def tag(self, level: str, batch: int) -> torch.Tensor:
        """The learned embedding of a level ``[B, 1, d]``: what the decoder is asked for."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
        return self.level_embeddings[LEVELS.index(level)].expand(batch, 1, -1)

    def check_state(self, state: MemoryState) -> None:
        if not isinstance(state, MemoryState):
            raise TypeError(f"expected a MemoryState, got {type(state).__name__}")
        if state.fingerprint != self.fingerprint:
            raise ValueError(
                "this memory was written by another base model or config "
                f"(fingerprint {state.fingerprint[:12]} != {self.fingerprint[:12]})"
            )

    # ----------------------------------------------------------------------------- directions

    def run(self, direction: str, *, logits: bool = False, **inputs):
        """One pass of the base model in ``direction``: its output (hidden states, or the LM
        head's logits with ``logits=True``)."""
        module = self.base if logits else self.base.base_model
        with self.direction(direction):
            return module(**inputs)

    @contextmanager
    def direction(self, direction: str) -> Iterator[None]:
        """Every pass of the base inside the block runs in ``direction``:

        - ``compress``: couplings forward, the encoder LoRA (writing, and the LM path);
        - ``expand``: the decoder the config names: the same LoRA with every coupling
          inverted (R³Mem), a separate LoRA decoder, or the frozen base;
        - ``bare``: the base model alone, couplings and LoRA off.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}")
        if direction == "expand":
            # the decoder:     couplings, LoRA,    the separate decoder's couplings
            couplings, lora, separate = {
                "inverse": ("inverse", ENCODER, False),
                "separate": ("off", DECODER, True),
                "frozen": ("off", None, False),
            }[self.config.decoder]
        else:
            couplings, lora, separate = {
                "compress": ("forward", ENCODER, False),
                "bare": ("off", None, False),
            }[direction]
        lora_switch = active_lora(self.base, lora) if self.config.lora else nullcontext()
        second = self.decoder_couplings.use("forward") if separate else nullcontext()
        with lora_switch, self.couplings.use(couplings), second:
            yield

    def bare(self):
        """The base model alone (couplings and LoRA off): to read or generate as it would."""
        return self.direction("bare")

    # ----------------------------------------------------------------------------- one segment

    def compress(
        self,
        memory: torch.Tensor | None,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        write: bool = True,
    ) -> Compressed:
        """One segment in the compress direction: read what the memory form puts before the
        text (nothing when ``memory`` is None), the text, then the write tokens. Without
        ``write``, the frozen base reads the memory and the text alone (``lm_reader = "base"``):
        the text's hidden states, no new memory."""
        batch, length, _ = inputs_embeds.shape
        m = self.config.num_memory_tokens if self.form.writes and write else 0
        empty = inputs_embeds[:, :0]
        context = (
            Context(empty, attention_mask[:, :0])
            if memory is None
            else self.form.context(self, memory, inputs_embeds.dtype)
        )
        write_tokens = self.write_embeddings[:m].unsqueeze(0).expand(batch, -1, -1)
        ones = attention_mask.new_ones(batch, m)
        # [B, n + T + m, d]
        embeds = torch.cat([context.embeds, inputs_embeds, write_tokens], dim=1)
        cached = attention_mask.new_ones(batch, context.cached)
        mask = torch.cat([cached, context.mask, attention_mask, ones], dim=1)
        # Text positions count real tokens; the write tokens sit at fixed positions after the
        # text's start (segment_length + j), however long the text: each slot then sees the
        # text, and the decoder sees each slot, at the same relative offsets (RoPE) in every
        # segment. Measured on the shipped base (16 -> 8 autoencoding, 750 steps): greedy
        # 0.91 against 0.80 when the write tokens followed the last real token.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -embeds.shape[1] :]
        if m and self.config.write_positions == "fixed":
            text_start = positions[:, -(length + m), None]  # [B, 1]
            offset = max(self.config.segment_length, length)
            slots = torch.arange(m, device=positions.device) + offset
            positions = torch.cat([positions[:, :-m], text_start + slots], dim=1)
        out = self.run(
            "compress" if write else "bare",
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            use_cache=self.form.caches,
            **{CACHE: context.past},
        )
        before = context.embeds.shape[1]
        hidden = out.last_hidden_state
        text = hidden[:, max(before - 1, 0) : before + length]
        if not write:
            return Compressed(text, None, before > 0)
        at_write = hidden[:, before + length :]  # [B, m, d]
        written = self.form.written(self, at_write, getattr(out, CACHE), inputs_embeds.dtype)
        previous = written[:, :0] if memory is None else memory
        memory = self.form.renew(previous, written, inputs_embeds, attention_mask)
        return Compressed(text, memory, before > 0)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        memory: MemoryState | None = None,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> R3MemOutput:
        """One segment on the LM path: read ``memory`` (None: no memory), score the text, write.

        With memory, the first token is scored from the last position read before it (the
        memory's last slot, a window's last past token, the kv form's document tag), so no
        token of a stream goes unscored at a segment boundary.
        """
        embeds, mask = self.embed_text(input_ids, inputs_embeds, attention_mask)
        if memory is not None:
            self.check_state(memory)
            check_batch(memory, embeds.shape[0])
        segment, reading = self.lm_pass(None if memory is None else memory.memory, embeds, mask)
        logits, loss = self.score(reading, labels)
        previous = memory if memory is not None else self.init_memory(embeds.shape[0])
        state = MemoryState(
            segment.memory, previous.level, previous.tokens_seen + mask.sum(-1), self.fingerprint
        )
        return R3MemOutput(loss=loss, logits=logits, memory=state)

    def lm_pass(
        self, memory: torch.Tensor | None, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[Compressed, Compressed]:
        """One segment on the LM path: (the segment compressed, what scores its text): the
        same pass, or with ``lm_reader = "base"`` a second pass of the frozen base over the
        memory and the text."""
        segment = self.compress(memory, inputs_embeds, attention_mask)
        if self.config.lm_reader == "adapted":
            return segment, segment
        return segment, self.compress(memory, inputs_embeds, attention_mask, write=False)

    def score(
        self, segment: Compressed, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The LM head over a compressed segment: logits ``[B, T, V]`` (``logits[:, i]``
        predicts token ``i + 1``) and, with ``labels``, the loss. After a context, the first
        token is scored from the position before it, so no token of a stream goes unscored."""
        logits = self.base.get_output_embeddings()(segment.hidden)
        loss = None
        if labels is not None and segment.after_context:
            ignore = labels.new_full((labels.shape[0], 1), IGNORE)
            loss = lm_loss(logits, torch.cat([ignore, labels], dim=1))
        elif labels is not None:
            loss = lm_loss(logits, labels)
        return (logits[:, 1:] if segment.after_context else logits), loss

    def embed_text(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        empty_rows: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate the text and return (embeddings [B, T, d], mask [B, T]). A row with no
        token is an error unless ``empty_rows`` (a segment of a run the row has finished)."""
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
        if not empty_rows and (attention_mask.sum(-1) == 0).any():
            raise ValueError("empty input: a row of attention_mask has no tokens")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        return inputs_embeds, attention_mask

    # ----------------------------------------------------------------------------- expand

    def _reading(
        self, state: MemoryState, entities: bool, cue_ids: torch.Tensor | None
    ) -> tuple[torch.Tensor, DynamicCache | None]:
        """What the decoder reads before the text: the memory form's ``[M] ⊕ [level tag]`` (in
        the ``kv`` form, the tag over a cache holding M), then ``embed(cue)``. The tag says
        what is asked for: a text (``paragraph``), the rest of a segment after a cue
        (``document``, as L_doc trains it), or the entity list (``entity``)."""
        self.check_state(state)
        level = "entity" if entities else "paragraph" if cue_ids is None else "document"
        tag = self.tag(level, state.batch_size)
        context = self.form.reading(self, state.memory.to(tag.dtype), tag)
        parts = [context.embeds]
        if cue_ids is not None:
            cue, _ = self.embed_text(cue_ids, None, None)
            check_batch(state, cue.shape[0])
            parts.append(cue)
        return torch.cat(parts, dim=1), context.past

    def decode_logits(
        self,
        state: MemoryState,
        target_ids: torch.Tensor,
        *,
        cue_ids: torch.Tensor | None = None,
        entities: bool = False,
    ) -> torch.Tensor:
        """Teacher-forced backward invocation: ``logits[:, i]`` predicts ``target_ids[:, i]``,
        the text the memory holds after ``cue_ids`` (or, with ``entities``, its entity list).

        Right padding in ``target_ids`` needs no mask: causal attention never looks ahead.
        """
        prefix, past = self._reading(state, entities, cue_ids)
        text, _ = self.embed_text(target_ids, None, None)
        embeds = torch.cat([prefix, text[:, :-1]], dim=1)
        logits = self.run("expand", logits=True, inputs_embeds=embeds, **{CACHE: past}).logits
        return logits[:, prefix.shape[1] - 1 :]

    @torch.no_grad()
    def reconstruct(
        self,
        state: MemoryState,
        max_new_tokens: int,
        *,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        cue_ids: torch.Tensor | None = None,
        eos_token_id: int | None = None,
        generator: torch.Generator | None = None,
        entities: bool = False,
        processor: Processor | None = None,
    ) -> torch.Tensor:
        """Backward invocation: generate back the text the memory holds (after ``cue_ids``; with
        ``entities``, its entity list), batched, with the KV cache; ``processor`` rescores each
        step (:class:`r3mem.guide.EntityGuide`).

        Returns ``[batch, n]`` token ids, ``n <= max_new_tokens``; rows that met ``eos_token_id``
        are padded with it.
        """
        prefix, past = self._reading(state, entities, cue_ids)
        with self.direction("expand"):
            return generate(
                self.base,
                prefix,
                past,
                max_new_tokens,
                Sampling(do_sample, temperature, top_k, eos_token_id, generator),
                processor,
            )


def check_batch(state: MemoryState, batch: int) -> None:
    if state.batch_size != batch:
        raise ValueError(f"batch mismatch: memory holds {state.batch_size} rows, input has {batch}")


def _checkpointing(base_model: nn.Module) -> bool:
    """Whether activation (gradient) checkpointing is on; transformers 5 renamed the flag."""
    flag = getattr(base_model, "is_activation_checkpointing", None)
    return bool(getattr(base_model, "is_gradient_checkpointing", False) if flag is None else flag)
