"""A reader: a causal LM that answers from recalled passages, and writes ``r3mem chat`` replies.

Deliberately simple (greedy, a few tokens, one prompt shape), so that what a benchmark
compares is what each memory brought back, not prompt engineering. A reader reads passages
as text, or (:meth:`Reader.of_memory_slots`) as the memory an R³Mem model writes of them.
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
from .state import MemoryState

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
        memory: Memory | None = None,
    ) -> None:
        self.model, self.tokenizer, self.mode = model, tokenizer, mode
        self.memory = memory  # set: passages are read as this model's memory, not as text
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
    def of_memory_slots(cls, memory: Memory) -> Reader:
        """The memory's adapted model reading passages as memory, not text: they are written,
        best last, into one document memory that its LM path reads before the question (the
        paper's use of the memory in RAG: a few slots in place of the passages' tokens)."""
        return cls(memory.model.base, memory.tokenizer, memory=memory)

    @staticmethod
    def default_name() -> str:
        """Which model :meth:`default` reads with: SmolLM2-135M-Instruct when its package is
        installed (a model that can answer), else ``"base"``, the memory's own base model."""
        return DEFAULT_READER if available(DEFAULT_READER) else "base"

    @classmethod
    def default(cls, memory: Memory) -> Reader:
        """The reader :meth:`default_name` names."""
        if cls.default_name() == DEFAULT_READER:
            return cls.load(DEFAULT_READER)
        logger.info("reader: the memory's base model (%s not installed)", DEFAULT_READER)
        return cls.of_memory(memory)

    @property
    def chats(self) -> bool:
        """Whether the model was tuned to chat: its tokenizer has a chat template."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    def _prompt_ids(
        self,
        prompt: str | list[dict[str, str]],
        max_new_tokens: int = ANSWER_TOKENS,
        slots: int = 0,
    ) -> list[int]:
        """``prompt``'s token ids (chat messages through the chat template), its beginning cut
        so that ``slots`` memory positions, it and the answer fit the model."""
        if isinstance(prompt, str):
            ids = self.tokenizer(prompt, add_special_tokens=False).input_ids
        else:
            ids = self.tokenizer.apply_chat_template(
                prompt, add_generation_prompt=True, return_dict=True
            )["input_ids"]
        return ids[-(self.max_positions - max_new_tokens - slots) :]

    def generate(
        self, prompt: str | list[dict[str, str]], max_new_tokens: int = ANSWER_TOKENS
    ) -> str:
        """Greedy continuation of ``prompt``: a text, up to its first line break, or chat
        messages ``{role, content}`` (through the chat template), up to the end of the
        reply. A prompt too long for the model loses its beginning, so put what matters
        most at the end."""
        return self._generate(prompt, max_new_tokens, None)[0]

    @torch.no_grad()
    def _generate(
        self, prompt: str | list[dict[str, str]], max_new_tokens: int, after: MemoryState | None
    ) -> tuple[str, int]:
        """:meth:`generate`'s text after the memory ``after`` (None: none), and the positions
        read before it (slots and prompt)."""
        slots = 0 if after is None else after.memory.shape[1]
        ids = self._prompt_ids(prompt, max_new_tokens, slots)
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([ids], device=device)
        if after is not None:
            assert self.memory is not None, "a memory is read by Reader.of_memory_slots"
            eos = self.tokenizer.eos_token_id
            out = self.memory.model.generate(after, input_ids, max_new_tokens, eos_token_id=eos)
        else:
            pad = self.tokenizer.pad_token_id
            pad = self.tokenizer.eos_token_id if pad is None else pad
            with self.mode():
                out = self.model.generate(
                    input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=0 if pad is None else pad,
                )[:, len(ids) :]
        text = self.tokenizer.decode(out[0], skip_special_tokens=True).strip()
        return (text.split("\n")[0].strip() if isinstance(prompt, str) else text), slots + len(ids)

    def answer(self, question: str, passages: Sequence[str]) -> str:
        """Answer ``question`` from ``passages`` (best first); the best is put nearest the
        question, so truncation drops the weakest."""
        return self.respond(question, passages)[0]

    def respond(self, question: str, passages: Sequence[str]) -> tuple[str, int]:
        """:meth:`answer`, and how many positions the reader read to give it: the prompt's
        tokens, plus the memory's slots when it reads the passages as memory."""
        prompt, after = self._question(question, passages)
        return self._generate(prompt, ANSWER_TOKENS, after)

    def _question(
        self, question: str, passages: Sequence[str]
    ) -> tuple[str | list[dict[str, str]], MemoryState | None]:
        """The prompt, and the memory of the passages when they are read as memory."""
        after = None if self.memory is None else self._written(passages)
        context = "" if after is not None else "\n\n".join(reversed(passages)) + "\n\n"
        if not self.chats:
            return f"{context}Question: {question}\nAnswer:", after
        ask = f"{context}Answer in a few words, from the text above.\nQuestion: {question}"
        return [{"role": "user", "content": ask}], after

    @torch.no_grad()
    def _written(self, passages: Sequence[str]) -> MemoryState:
        """One document memory of ``passages``, the best written last."""
        assert self.memory is not None
        model = self.memory.model
        ids = [i for passage in reversed(passages) for i in self.memory.encode(passage)[0].tolist()]
        if not ids:
            return model.init_memory(1)
        return model.write(model.init_memory(1), torch.tensor([ids], device=model.device))
