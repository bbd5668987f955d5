"""Gradient (activation) checkpointing of the base model's layers, made safe for R³Mem.

A checkpointed layer is run again during the backward pass. By then the couplings and the
live LoRA adapter may be in another mode than the one of the forward pass (the read path
inverts the couplings and may switch adapters), so a plain recomputation would produce
other activations and silently wrong gradients. Here every checkpoint captures the modes at
its forward pass and the recomputation runs under them (torch's ``context_fn``).

The ``kv`` memory form is refused: it reads the memory as a KV cache and takes the new
memory from the cache, which checkpointed layers neither read nor fill.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext

from .cell import MemoryCell
from .lora import active_lora, live_adapter


def enable_gradient_checkpointing(model: MemoryCell) -> None:
    """Checkpoint every decoder layer of ``model.base``; recomputation replays the forward
    pass's coupling modes and LoRA adapter."""
    if model.config.memory_form == "kv":
        raise ValueError(
            "gradient checkpointing needs memory_form='embedding': the kv form reads and writes "
            "the memory through the KV cache, which checkpointed layers do not keep"
        )
    stacks = [s for s in (model.couplings, model.decoder_couplings) if s is not None]

    def context_fn():
        modes = [(stack, stack.mode) for stack in stacks]
        adapter = live_adapter(model.base)

        @contextmanager
        def replay() -> Iterator[None]:
            with ExitStack() as scope:
                for stack, mode in modes:
                    scope.enter_context(stack.use(mode))
                scope.enter_context(active_lora(model.base, adapter))
                yield

        return nullcontext(), replay()

    enable = getattr(model.base, "activation_checkpointing_enable", None)
    kwargs = {"use_reentrant": False, "context_fn": context_fn}
    if enable is not None:  # transformers >= 5
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
