"""Guided recall: the entity and keyword levels steer what the paragraph memory gives back.

An entry keeps the entities its paragraph names (the bank's entity level, DESIGN 2.4) and the
words its keyword level indexes, and names, numbers, dates and rare words are what greedy
decoding of a memory misses first: the decoder knows a name stood there and makes one up.
The guide adds log-probability to every token that begins one of the entry's names
(``START_BONUS``) and more to the token that goes on with a name the text has begun
(``CONTINUE_BONUS``); its names are the entities, then the keywords as the keyword level
keeps them (lower-cased) and capitalised (:func:`guide_names`). The memory still decides
where a name goes and whether it goes at all; where it hesitates between a stored word and a
made-up one, the stored word wins. It reads nothing but what the bank keeps for search
anyway, so the stored bytes do not change. Exact recall does not use it: corrections are
found against plain greedy decoding.

The bonuses were chosen on a split the benches never report (``benchmarks/guide_dev.py``:
the first answer-bearing unit of 58-60 questions a set whose passages lie at 500-1,499, seed
1, the shipped default, 64-token units, retrieval taken as perfect): the answer survived
greedy decoding 0.87 / 0.93 / 0.85 of the time (SQuAD / HotpotQA / NQ), 0.92 / 0.98 / 1.00
with bonuses 1 and 4 on the entities, 0.92 / 0.97 / 0.98 with 2 and 4, 0.93 / 0.97 / 0.98
with 2 and 8. The keywords were added on the same split (``guide_dev.py --keywords``): at 1
and 4, token accuracy 0.956 / 0.968 / 0.962 with the entities alone, 0.986 / 0.977 / 0.978
with the keywords too, the answer surviving 0.98 / 0.98 / 1.00 (64-token units); at the
default's 32-token units 0.994 / 0.991 / 0.983 against 0.999 / 0.997 / 0.990.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

START_BONUS = 1.0  # nats added to a token that begins one of the entry's names
CONTINUE_BONUS = 4.0  # nats added to the next token of a name the text has begun


def guide_names(entities: Sequence[str], keywords: Iterable[str]) -> list[str]:
    """What an entry's decoding is steered towards: its entities, then its keywords as written
    (the keyword level lower-cases them) and capitalised (a sentence's first word)."""
    return [*entities, *(spelled for word in keywords for spelled in (word, word.capitalize()))]


@dataclass(frozen=True)
class Spelling:
    """A name's token ids; ``glued``: spelled without the space before it, so it may begin
    only where a word may (the text's start, or after a token that ends in no letter or
    digit: ``(Nourmands``, never ``201`` + ``1999``)."""

    ids: tuple[int, ...]
    glued: bool


def spellings(tokenizer: PreTrainedTokenizerBase, names: Sequence[str]) -> list[Spelling]:
    """Each name's spelling after a space, and glued, without repeats."""
    found: dict[tuple[int, ...], Spelling] = {}
    for name in names:
        for text, glued in ((f" {name}", False), (name, True)):
            ids = tuple(tokenizer.encode(text, add_special_tokens=False))
            if ids and ids not in found:
                found[ids] = Spelling(ids, glued)
    return list(found.values())


def bonuses(
    prefix: Sequence[int],
    names: Sequence[Spelling],
    boundary: Callable[[int], bool],
    start: float = START_BONUS,
    go_on: float = CONTINUE_BONUS,
) -> dict[int, float]:
    """The bonus of each token a name's spelling makes likely after ``prefix``: its first
    token, and the token after the longest part of it that ``prefix`` ends with (a name
    ``" D m i t r i"`` begun twice over, at its space and at ``" D m i t r i "``, goes on
    from the longer). ``boundary(token)``: whether a word may begin after ``token``."""
    bonus: dict[int, float] = {}
    for name in names:

        def opens(at: int, name: Spelling = name) -> bool:
            return not name.glued or at == 0 or boundary(prefix[at - 1])

        if opens(len(prefix)):
            bonus[name.ids[0]] = max(bonus.get(name.ids[0], 0.0), start)
        for begun in range(min(len(name.ids) - 1, len(prefix)), 0, -1):
            at = len(prefix) - begun
            if tuple(prefix[at:]) == name.ids[:begun] and opens(at):
                bonus[name.ids[begun]] = max(bonus.get(name.ids[begun], 0.0), go_on)
                break
    return bonus


class EntityGuide:
    """A processor for :func:`r3mem.generation.generate`: row ``r`` is steered towards the
    names ``names[r]`` (:func:`guide_names`), as spelled by ``tokenizer``, with bonuses
    ``start`` and ``go_on`` (nats; ``benchmarks/guide_dev.py`` measures others). A bonus added
    to a row's logits moves it as it would move the log-probabilities: they differ by a
    constant."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        names: Sequence[Sequence[str]],
        start: float = START_BONUS,
        go_on: float = CONTINUE_BONUS,
    ) -> None:
        self.tokenizer = tokenizer
        self.names = [spellings(tokenizer, row) for row in names]
        self.start, self.go_on = start, go_on
        self.ends_word: dict[int, bool] = {}

    def boundary(self, token: int) -> bool:
        """Whether a word may begin after ``token``: it ends in no letter or digit."""
        if token not in self.ends_word:
            text = self.tokenizer.decode([token])
            self.ends_word[token] = bool(text) and text[-1].isalnum()
        return not self.ends_word[token]

    def __call__(self, chosen: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if len(self.names) != scores.shape[0]:
            raise ValueError(f"guide holds {len(self.names)} rows, scores {scores.shape[0]}")
        rows: list[int] = []
        cols: list[int] = []
        values: list[float] = []
        for row, (prefix, names) in enumerate(zip(chosen.tolist(), self.names, strict=True)):
            bonus = bonuses(prefix, names, self.boundary, self.start, self.go_on)
            rows += [row] * len(bonus)
            cols += bonus
            values += bonus.values()
        if not rows:
            return scores
        device = scores.device
        index = (torch.tensor(rows, device=device), torch.tensor(cols, device=device))
        added = torch.tensor(values, dtype=scores.dtype, device=device)
        return scores.index_put(index, added, accumulate=True)
