"""A reader: a causal LM that answers from recalled passages, and writes ``r3mem chat`` replies.

Deliberately simple (greedy, a few tokens, one prompt shape), so that what a benchmark
compares is what each memory brought back, not prompt engineering.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from .checkpoint import model_source
from .memory import Memory
from .pretrained import available

logger = logging.getLogger(__name__)

ANSWER_TOKENS = 16
# The reader that bench rag, bench conv and r3mem chat use when none is named.
DEFAULT_READER = "smollm2-135m"


class Reader:
    """Greedy generation with ``model`` (a Hugging Face causal LM) inside ``mode()``."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        mode: Callable[[], AbstractContextManager] = nullcontext,
    ) -> None:
        self.model, self.tokenizer, self.mode = model, tokenizer, mode
        config = model.config
        self.max_positions = int(
            getattr(config, "max_position_embeddings", None)
            or getattr(config, "n_positions", None)
            or 2048
        )

    @classmethod
    def load(cls, path: str | Path) -> Reader:
        """Any local Hugging Face causal LM directory (nothing is downloaded for a path), or a
        model r3mem knows by name (``smollm2-135m``)."""
        source = model_source(path)
        tokenizer = AutoTokenizer.from_pretrained(source)
        return cls(AutoModelForCausalLM.from_pretrained(source).eval(), tokenizer)

    @classmethod
    def of_memory(cls, memory: Memory) -> Reader:
        """The memory's own base model, with its adapters switched off."""
        return cls(memory.model.base, memory.tokenizer, memory.model.bare)

    @classmethod
    def default(cls, memory: Memory) -> Reader:
        """SmolLM2-135M-Instruct when its package is installed (a model that can answer),
        else the memory's own base model."""
        if available(DEFAULT_READER):
            return cls.load(DEFAULT_READER)
        logger.info("reader: the memory's base model (%s not installed)", DEFAULT_READER)
        return cls.of_memory(memory)

    @property
    def chats(self) -> bool:
        """Whether the model was tuned to chat: its tokenizer has a chat template."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    @torch.no_grad()
    def generate(
        self, prompt: str | list[dict[str, str]], max_new_tokens: int = ANSWER_TOKENS
    ) -> str:
        """Greedy continuation of ``prompt``: a text, up to its first line break, or chat
        messages ``{role, content}`` (through the chat template), up to the end of the
        reply. A prompt too long for the model loses its beginning, so put what matters
        most at the end."""
        if isinstance(prompt, str):
            ids = self.tokenizer(prompt, add_special_tokens=False).input_ids
        else:
            ids = self.tokenizer.apply_chat_template(
                prompt, add_generation_prompt=True, return_dict=True
            )["input_ids"]
        ids = ids[-(self.max_positions - max_new_tokens) :]
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([ids], device=device)
        pad = self.tokenizer.pad_token_id
        pad = self.tokenizer.eos_token_id if pad is None else pad
        with self.mode():
            out = self.model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=0 if pad is None else pad,
            )
        text = self.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True).strip()
        return text.split("\n")[0].strip() if isinstance(prompt, str) else text

    def answer(self, question: str, passages: Sequence[str]) -> str:
        """Answer ``question`` from ``passages`` (best first); the best is put nearest the
        question, so truncation drops the weakest."""
        context = "\n\n".join(reversed(passages))
        if not self.chats:
            return self.generate(f"{context}\n\nQuestion: {question}\nAnswer:")
        ask = f"{context}\n\nAnswer in a few words, from the text above.\nQuestion: {question}"
        return self.generate([{"role": "user", "content": ask}])
