"""``Memory``: the user-facing handle on a trained R³Mem model and its tokenizer.

``Memory.load()`` with no argument opens the default model shipped inside the package, with
no network. The hierarchical bank behind ``remember`` / ``recall`` builds on this class.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from .assets import DEFAULT_MODEL, asset_path
from .checkpoint import CONFIG_NAME
from .model import R3MemModel


def default_model_path() -> Path:
    """Where the shipped default model lives inside the installed package."""
    return asset_path(DEFAULT_MODEL)


class Memory:
    """An R3MemModel with its tokenizer."""

    def __init__(self, model: R3MemModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, path: str | Path | None = None) -> Memory:
        """Open a model directory holding ``base/`` and ``adapter/`` (the layout of the shipped
        default, used when ``path`` is None), or an adapter directory whose config names its
        base. Nothing is downloaded for a local path."""
        root = default_model_path() if path is None else Path(path)
        if (root / "adapter" / CONFIG_NAME).is_file():
            base_dir, adapter_dir = root / "base", root / "adapter"
        elif (root / CONFIG_NAME).is_file():
            adapter_dir = root
            base_dir = Path(R3MemModel.base_name(adapter_dir))
        else:
            hint = " (the default model is not packaged in this install)" if path is None else ""
            raise FileNotFoundError(f"{root}: no r3mem model here{hint}")
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        base = AutoModelForCausalLM.from_pretrained(base_dir)
        model = R3MemModel.from_pretrained(adapter_dir, base_model=base).eval()
        return cls(model, tokenizer)

    def encode(self, text: str):
        """Token ids ``[1, T]`` of ``text``; empty text is an error."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        if ids.shape[1] == 0:
            raise ValueError("empty text: nothing to remember")
        return ids.to(self.model.device)
