"""LoRA on the base model's projections through ``peft``, and switching which adapter is live.

Couplings are position-wise and cannot change where attention looks, so the write and read
paths also need low-rank updates of the attention and MLP projections (DESIGN 2.1).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from .config import R3MemConfig

ENCODER = "default"  # the adapter used for writing (and, with decoder="inverse", for reading)
DECODER = "decoder"  # the second adapter of the decoder="separate" ablation


def projection_names(
    layers_name: str, layers: nn.ModuleList, wanted: list[str] | None
) -> list[str]:
    """Full names of the linear projections inside the decoder blocks.

    ``wanted`` (leaf names such as ``q_proj``) narrows the choice; ``None`` takes every linear
    layer of the blocks (GPT-2's ``Conv1D`` counts as linear), which covers attention and MLP.
    """
    names = []
    for index, layer in enumerate(layers):
        for sub_name, module in layer.named_modules():
            is_linear = isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
            leaf = sub_name.rsplit(".", 1)[-1]
            if is_linear and (wanted is None or leaf in wanted):
                names.append(f"{layers_name}.{index}.{sub_name}")
    if not names:
        raise ValueError(
            f"R3MemConfig.lora_target_modules={wanted!r} matches no linear layer in {layers_name}"
        )
    return names


def inject_lora(model: nn.Module, config: R3MemConfig, targets: list[str]) -> None:
    """Add the encoder LoRA (and the separate decoder's, in that ablation) to ``model``."""
    lora_config = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        fan_in_fan_out=any(type(model.get_submodule(t)).__name__ == "Conv1D" for t in targets),
    )
    inject_adapter_in_model(lora_config, model, adapter_name=ENCODER)
    if config.decoder == "separate":
        with warnings.catch_warnings():  # peft warns that a second adapter is deliberate
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            inject_adapter_in_model(lora_config, model, adapter_name=DECODER)
    model.__dict__.pop("_r3mem_lora_layers", None)  # list the layers just injected
    _activate(model, ENCODER)


def _lora_layers(model: nn.Module) -> list[BaseTunerLayer]:
    """The model's LoRA layers, listed once: every segment switches adapters, and walking
    the whole module tree each time cost a third of a tiny model's time per segment."""
    layers = model.__dict__.get("_r3mem_lora_layers")
    if layers is None:
        layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
        model.__dict__["_r3mem_lora_layers"] = layers
    return layers


def _activate(model: nn.Module, adapter: str | None) -> None:
    """Make ``adapter`` live (``None``: all LoRA off) without changing what is trainable.

    peft's own switches also flip ``requires_grad``; the write and read paths of one training
    step use different adapters, so the flags are put back as they were.
    """
    layers = _lora_layers(model)
    flags = {p: p.requires_grad for layer in layers for p in layer.parameters()}
    for layer in layers:
        if adapter is None:
            layer.enable_adapters(False)
        else:
            layer.enable_adapters(True)
            layer.set_adapter(adapter)
    for param, flag in flags.items():
        param.requires_grad_(flag)


def live_adapter(model: nn.Module) -> str | None:
    """The LoRA adapter live in ``model`` now (``None``: LoRA off or absent)."""
    layers = _lora_layers(model)
    if not layers or layers[0].disable_adapters:
        return None
    return layers[0].active_adapters[0]


@contextmanager
def active_lora(model: nn.Module, adapter: str | None) -> Iterator[None]:
    """Use ``adapter`` inside the block, then the adapter that was live before it (nothing
    to switch, and nothing to pay, when it is live already: the write path's case)."""
    previous = live_adapter(model)
    if previous == adapter:
        yield
        return
    _activate(model, adapter)
    try:
        yield
    finally:
        _activate(model, previous)
