"""Which score finds the evidence in R³Mem's memory: pooled cosine, the entity bonus, the
keyword level, and query likelihood from the backward invocation, alone and together,
against BM25 (issue 15).

    python benchmarks/recall_scoring.py --data ../shared/data/qa/squad_v2_dev_cs224n \
        [--passages 500] [--questions 100|all] [--seed 0] [--model DIR] \
        [--memories FILE ...] [--no-rerank]

The passages are written into one memory as ``bench rag`` writes them (or the memory a
``bench rag`` run saved is opened, one ``--memories`` file per QA set in order, once found
to hold exactly those passages' segments); every score ranks the same entries. ``--questions
all`` scores every question whose gold passages lie among the passages, not a draw of them:
recall needs no decoding, so the figure a draw of 50-100 questions moves can be had on
all of them. ``--no-rerank`` leaves out the query-likelihood rows (a decoder pass over 50
candidates a question). Query likelihood from the backward invocation re-ranks recall's top 50 (over
every entry it costs ~10 s a query and ranked below cosine + entities: recall@5 0.23 SQuAD,
0.17 HotpotQA on the default of rev 00af6b0): ``pmi`` keeps, per query token, only what the
memory adds over the memory-free decoder (``max(0, log p(t | memory) - log p(t | no
memory))``, summed), so a query's common words weigh nothing. ``keywords`` is the bank's
BM25 over the words of each entry's exact recall; ``recall`` is what ``Memory.recall`` ranks
by (cosine + entities + keywords, moved by the source lift; the weights of ``r3mem.bank``);
rows ``... w keywords`` weigh the keyword level otherwise. Writes
benchmarks/results/recall_scoring.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tqdm import tqdm

from r3mem import Memory
from r3mem.bank import KEYWORD_WEIGHT, SOURCE_WEIGHT, Entry, checksum
from r3mem.bench.rag import QASet, passage_units, read_qa, take, written
from r3mem.bench.retrieval import BM25Index, Unit, recall_at
from r3mem.entries import entry_states
from r3mem.keywords import keywords
from r3mem.report import write_report
from r3mem.segment import Segment
from r3mem.state import MemoryState

CANDIDATES = 50  # entries the first stage hands to a re-ranker
RERANK = f"recall, top {CANDIDATES} re-ranked by pmi"  # alone, or added to recall's score:
PMI_WEIGHTS = (0.1, 0.3, 1.0)  # times its z-score over the candidates
RECALL = f"recall (cosine + entities + {KEYWORD_WEIGHT:g} keywords, source lift {SOURCE_WEIGHT:g})"
WEIGHTS = (0.5, 1.0, 4.0)  # keyword weights tried beside the bank's


def _tick(seconds: dict[str, float], name: str, since: float) -> float:
    """Add the time since ``since`` to ``name``'s; the clock now."""
    now = time.perf_counter()
    seconds[name] = seconds.get(name, 0.0) + now - since
    return now


@torch.no_grad()
def token_logprobs(memory: Memory, state, query: torch.Tensor) -> torch.Tensor:
    """``[entries, len]``: log p of each query token given each entry's memory."""
    target = query.expand(state.batch_size, -1)
    logits = memory.model.decode_logits(state, target).float()
    return torch.log_softmax(logits, -1).gather(-1, target[..., None])[..., 0]


def zscore(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean()) / (x.std() + 1e-6)


def question_count(value: str) -> int | None:
    """``--questions``: a positive count, or ``all`` (None: every question, no draw)."""
    if value == "all":
        return None
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"a positive count or all, not {value!r}")
    return int(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="QA files or folders (rag's)")
    parser.add_argument("--passages", type=int, default=500)
    parser.add_argument("--questions", type=question_count, default=100, help="a count or all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="r3mem model directory (default: the shipped one)")
    parser.add_argument("--memories", nargs="+", help="memory files bench rag saved, per set")
    parser.add_argument("--no-rerank", action="store_true", help="no query-likelihood rows")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    memory = Memory.load(args.model)
    found = [qa for data in args.data for qa in read_qa(data)]
    sets = [take(qa, args.passages, args.questions, args.seed) for qa in found]
    if args.memories is not None and len(args.memories) != len(sets):
        parser.error(f"--memories: {len(args.memories)} files for {len(sets)} QA sets")
    rows = []
    for number, qa in enumerate(sets):
        if args.memories is None:
            cut = [memory.segments(text) for text in qa.passages]
            bank = written(memory, cut, qa.name)
        else:
            bank, cut = opened(memory, args.memories[number], qa.passages)
        rows += measure(bank, qa, cut, rerank=not args.no_rerank)
    notes = (
        "ms/question: the score's own cost per query: recall includes writing the "
        f"query's memory; a re-ranker adds its {CANDIDATES} candidates' decoder pass to it. "
        "Units are the entries bench rag retrieves."
    )
    write_report(args.out, "recall_scoring", args.seed, rows, notes)


def opened(memory: Memory, path: str, passages: list[str]) -> tuple[Memory, list[list[Segment]]]:
    """The memory saved at ``path`` and ``passages`` cut at its entry length, once it is
    found to hold those segments in order, each from its passage (what ``bench rag``
    writes), and nothing else."""
    bank = memory.reopen(path)
    cut = [bank.segments(text) for text in passages]
    wanted = [(str(pid), checksum(s.ids)) for pid, segments in enumerate(cut) for s in segments]
    held = [(e.meta.get("source"), e.checksum) for e in bank.bank.entries.values()]
    if held != wanted:
        raise SystemExit(f"{path}: does not hold these passages' segments (another set or cut)")
    return bank, cut


def opened_or_written(memory: Memory, path: str, qa: QASet) -> tuple[Memory, list[list[Segment]]]:
    """:func:`opened` of the memory saved at ``path``, written there first, as ``bench rag``
    writes ``qa``'s passages, when no file is there yet."""
    if not Path(path).exists():
        written(memory, [memory.segments(text) for text in qa.passages], qa.name).save(path)
    return opened(memory, path, qa.passages)


def measure(bank: Memory, qa: QASet, cut: list[list[Segment]], rerank: bool) -> list[dict]:
    """One row per score: recall@5 of the gold passages over ``qa``'s questions, ranking the
    entries of ``bank`` (``cut``'s segments)."""
    ids = list(bank.bank.entries)
    entries = [bank.bank.entries[i] for i in ids]
    keyed = [Unit("", [entry.meta["source"]]) for entry in entries]  # what recall_at judges
    bm25 = BM25Index(passage_units(cut))
    empty = bank.model.init_memory(1, "paragraph")

    found: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    for question in tqdm(qa.questions, desc=f"{qa.name}: questions"):
        clock = time.perf_counter()
        hits = bm25.search(question.text, 5)
        clock = _tick(seconds, "bm25", clock)
        found.setdefault("bm25", []).append(recall_at(hits, question.gold, 5))
        pooled = bank.query_memories([question.text])[0]
        words = keywords(question.text)
        recall = bank.bank.scores(pooled, bank.extractor(question.text), words)
        clock = _tick(seconds, RECALL, clock)
        cosine = bank.bank.own_scores(pooled, [])
        with_entities = bank.bank.own_scores(pooled, bank.extractor(question.text))
        found_words = bank.bank.keyword_index.scores(words)
        cosine, with_entities, recall, lexical = (
            torch.tensor([d.get(i, 0.0) for i in ids])
            for d in (cosine, with_entities, recall, found_words)
        )
        bonus = with_entities - cosine
        relative = lexical / lexical.max().clamp(min=1e-9)
        scores = {
            "cosine": cosine,
            "cosine + entities": with_entities,
            "keywords": lexical,
            RECALL: recall,
            **{
                f"cosine + entities + {w:g} keywords": with_entities + w * relative for w in WEIGHTS
            },
            "entities + keywords": bonus + KEYWORD_WEIGHT * relative,
        }
        if rerank:
            query = bank.encode(question.text)[:, : bank.model.config.segment_length]
            scores.update(reranked(bank, entries, query, empty, recall, seconds))
        for name, score in scores.items():
            top = [keyed[j] for j in torch.argsort(-score)[:5].tolist()]
            found.setdefault(name, []).append(recall_at(top, question.gold, 5))
    count = len(qa.questions)
    rows = [
        {
            "dataset": qa.name,
            "passages": len(qa.passages),
            "entries": len(ids),
            "questions": count,
            "score": name,
            "recall@5": round(sum(values) / count, 3),
            "ms/question": round(1000 * seconds[name] / count, 1) if name in seconds else None,
        }
        for name, values in found.items()
    ]
    for row in rows:
        print(row, flush=True)
    return rows


def reranked(
    bank: Memory,
    entries: list[Entry],
    query: torch.Tensor,
    empty: MemoryState,
    recall: torch.Tensor,
    seconds: dict[str, float],
) -> dict[str, torch.Tensor]:
    """The query-likelihood scores over every entry (-inf outside recall's top
    ``CANDIDATES``): pmi alone, and added to recall's score. An entry in parts scores as
    its best part: each part's memory holds only its own tokens."""
    clock = time.perf_counter()
    first = torch.argsort(-recall)[:CANDIDATES]
    chosen = [entries[j] for j in first.tolist()]
    free = token_logprobs(bank, empty, query)[0]
    rows = (token_logprobs(bank, entry_states(bank.model, chosen), query) - free).clamp(min=0)
    by_entry = rows.sum(1).split([entry.parts for entry in chosen])
    pmi = torch.stack([parts.max() for parts in by_entry])
    _tick(seconds, RERANK, clock)
    local = {RERANK: pmi}
    for w in PMI_WEIGHTS:
        local[f"recall + {w:g} z(pmi), top {CANDIDATES}"] = recall[first] + w * zscore(pmi)
    scores = {}
    for name, values in local.items():
        scores[name] = torch.full_like(recall, -torch.inf)
        scores[name][first] = values
    return scores


if __name__ == "__main__":
    main()
