"""Reversible coupling adapters (DESIGN 2.1) and their attachment to a decoder's layer stack.

After decoder layer l the residual stream h = (a, b) is mapped by

    forward:  a' = a + F(b)      b' = b + G(a')
    inverse:  b  = b' - G(a')    a  = a' - F(b)

which is exactly invertible for any F, G. Both are low-rank bottleneck MLPs whose last
projection starts at zero, so a freshly wrapped model computes what the base computes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

MODES = ("forward", "inverse", "off")


class Bottleneck(nn.Module):
    """x -> up(silu(down(x))), with ``up`` zero-initialised so the module starts as zero."""

    def __init__(self, dim_in: int, rank: int, dim_out: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim_in, rank)
        self.up = nn.Linear(rank, dim_out)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(nn.functional.silu(self.down(x)))


class Coupling(nn.Module):
    """Additive coupling on the two halves of the hidden state: invertible by construction."""

    def __init__(self, hidden_size: int, rank: int) -> None:
        super().__init__()
        if hidden_size % 2:
            raise ValueError(f"coupling needs an even hidden size, got {hidden_size}")
        half = hidden_size // 2
        self.f = Bottleneck(half, rank, half)
        self.g = Bottleneck(half, rank, half)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a, b = h.chunk(2, dim=-1)
        a = a + self.f(b)
        b = b + self.g(a)
        return torch.cat([a, b], dim=-1)

    def inverse(self, h: torch.Tensor) -> torch.Tensor:
        a, b = h.chunk(2, dim=-1)
        b = b - self.g(a)
        a = a - self.f(b)
        return torch.cat([a, b], dim=-1)


class ResidualAdapter(nn.Module):
    """The non-reversible ablation: h + U(silu(D h)). It has no inverse."""

    def __init__(self, hidden_size: int, rank: int) -> None:
        super().__init__()
        self.net = Bottleneck(hidden_size, rank, hidden_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.net(h)

    def inverse(self, h: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("a residual adapter (reversible=False) has no inverse")


def find_decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Return (name, ModuleList) of the repeated decoder blocks.

    That is the largest ModuleList of same-typed modules, by parameter count: it finds the
    blocks of Llama, Qwen2, Mistral, GPT-2, Phi, ... without a table of names.
    """
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if best is None or size > best[0]:
            best = (size, name, module)
    if best is None:
        raise ValueError(f"{type(model).__name__}: found no stack of repeated decoder layers")
    return best[1], best[2]


class CouplingStack(nn.Module):
    """One adapter per decoder layer, applied through forward hooks, with a mode switch.

    ``mode`` is ``forward`` (write), ``inverse`` (reconstruct) or ``off`` (the bare base model).
    Hooks keep the base model's modules untouched, and work position-wise, so the KV cache and
    ``generate`` see the adapted hidden states exactly as a full pass would.
    """

    def __init__(
        self, layers: nn.ModuleList, hidden_size: int, rank: int, reversible: bool
    ) -> None:
        super().__init__()
        adapter = Coupling if reversible else ResidualAdapter
        self.adapters = nn.ModuleList(adapter(hidden_size, rank) for _ in layers)
        self.mode = "off"
        self._handles = [
            layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(layers)
        ]

    def __len__(self) -> int:
        return len(self.adapters)

    def __getitem__(self, index: int) -> nn.Module:
        return self.adapters[index]

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.adapters)

    def _hook(self, index: int):
        def apply(module: nn.Module, args: tuple, output):
            if self.mode == "off":
                return output
            adapter = self.adapters[index]
            step = adapter if self.mode == "forward" else adapter.inverse
            if isinstance(output, torch.Tensor):
                return step(output)
            return (step(output[0]), *output[1:])  # older transformers return (hidden, ...)

        return apply

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"coupling mode must be one of {', '.join(MODES)}; got {mode!r}")
        self.mode = mode

    @contextmanager
    def use(self, mode: str) -> Iterator[None]:
        """Temporarily switch mode; the previous mode comes back even on error."""
        previous = self.mode
        self.set_mode(mode)
        try:
            yield
        finally:
            self.mode = previous

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """All adapters in layer order, without the layers in between (for tests and analysis)."""
        for adapter in self.adapters:
            h = adapter(h)
        return h

    def inverse(self, h: torch.Tensor) -> torch.Tensor:
        """Exact inverse of :meth:`forward`: adapters undone in reverse layer order."""
        for adapter in reversed(self.adapters):
            h = adapter.inverse(h)
        return h
