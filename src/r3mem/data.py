"""Training data: a byte-level BPE tokenizer, and corpora tokenised once into a cached memmap.

A corpus is the token ids of its documents laid end to end, each followed by EOS, in a
``uint16``/``uint32`` file beside a JSON index of where each document starts. The cache key
hashes the tokenizer and the source files' names and contents (not their mtimes: a copied or
remounted dataset keeps its cache), so a second run starts at once and a changed file or
tokenizer is never served stale.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm import tqdm
from transformers import PreTrainedTokenizerFast

from .files import atomic_path, atomic_write
from .hierarchy import default_entity_extractor, format_entities
from .segment import Tokens, cut, pad_ids
from .sources import DataError, read_texts

EOS = "<|endoftext|>"
ENTITY_LENGTH = 24  # tokens of a segment's "entities: A; B; C" target (L_ent), EOS included
PAD = "<|pad|>"


def train_tokenizer(
    source: str | Path, vocab_size: int, out_dir: str | Path
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on the texts under ``source`` and save it in the Hugging Face
    layout (``tokenizer.json`` + config), loadable with ``AutoTokenizer.from_pretrained``."""
    texts = [text for _, text in read_texts(source)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    bpe.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=EOS, bos_token=EOS, pad_token=PAD, unk_token=None
    )
    tokenizer.model_max_length = 1 << 30
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


@dataclass
class Corpus:
    """Token ids of a set of documents, end to end (memmapped), and where each starts."""

    tokens: np.ndarray
    doc_ids: list[str]
    starts: list[int]

    def __len__(self) -> int:
        return len(self.tokens)

    def windows(self, length: int, batch: int, seed: int, draw: int | list[int]) -> torch.Tensor:
        """``batch`` random windows of ``length`` tokens. They depend only on (seed, draw), so a
        resumed run sees exactly the batches it would have seen."""
        if len(self.tokens) <= length:
            raise DataError(f"corpus of {len(self.tokens)} tokens is shorter than one window")
        generator = np.random.default_rng([seed, *np.atleast_1d(draw).tolist()])
        starts = generator.integers(0, len(self.tokens) - length, size=batch)
        return torch.from_numpy(
            np.stack([self.tokens[s : s + length] for s in starts]).astype(np.int64)
        )


def mix_corpora(main: Corpus, extra: Corpus, repeat: int) -> Corpus:
    """``main`` followed by ``repeat`` copies of ``extra``: a small corpus drawn as often as one
    ``repeat`` times its size (random windows are uniform over the tokens, and, as between
    documents, one may run on from one source or copy into the next)."""
    doc_ids, starts = list(main.doc_ids), list(main.starts)
    for copy in range(repeat):
        offset = len(main) + copy * len(extra)
        doc_ids += [f"{doc}#{copy}" for doc in extra.doc_ids]
        starts += [start + offset for start in extra.starts]
    tokens = np.concatenate([np.asarray(main.tokens), *[np.asarray(extra.tokens)] * repeat])
    return Corpus(tokens=tokens, doc_ids=doc_ids, starts=starts)


def _fingerprint(source: Path, tokenizer: PreTrainedTokenizerFast) -> str:
    digest = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode())
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for path in files:
        name = path.name if path == source else path.relative_to(source).as_posix()
        digest.update(f"{name}:{path.stat().st_size}:".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def load_corpus(
    source: str | Path, tokenizer: PreTrainedTokenizerFast, cache_dir: str | Path
) -> Corpus:
    """Tokenise the texts under ``source`` once; later calls open the cached memmap."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or directory")
    cache = Path(cache_dir) / f"{source.name}-{_fingerprint(source, tokenizer)}"
    index_path, tokens_path = cache.with_suffix(".json"), cache.with_suffix(".bin")
    if not index_path.is_file():
        _build_cache(source, tokenizer, index_path, tokens_path)
    index = json.loads(index_path.read_text(encoding="utf-8"))
    tokens = np.memmap(tokens_path, dtype=index["dtype"], mode="r")
    return Corpus(tokens=tokens, doc_ids=index["doc_ids"], starts=index["starts"])


def _build_cache(
    source: Path, tokenizer: PreTrainedTokenizerFast, index_path: Path, tokens_path: Path
) -> None:
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max else np.uint32
    doc_ids, starts, pieces, total = [], [], [], 0
    for doc_id, text in tqdm(list(read_texts(source)), desc=f"tokenising {source.name}"):
        ids = [*tokenizer(text, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
        doc_ids.append(doc_id)
        starts.append(total)
        pieces.append(np.asarray(ids, dtype=dtype))
        total += len(ids)
    index_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(tokens_path) as tmp:  # two runs may build one cache
        np.concatenate(pieces).tofile(tmp)
    index = {"dtype": np.dtype(dtype).name, "doc_ids": doc_ids, "starts": starts, "tokens": total}
    atomic_write(index_path, json.dumps(index))  # the index last: its presence means it is whole


@dataclass
class Segments:
    """A corpus split by the hierarchy into segments of at most ``segment_length`` tokens.

    ids:          ``[N, segment_length]`` token ids, right-padded with the pad id.
    lengths:      ``[N]`` real tokens per segment.
    documents:    ``[N]`` index of the document each segment comes from.
    entities:     ``[N, entity_length]`` "entities: A; B; C" of each segment, padded.
    entity_lengths: ``[N]``.
    """

    ids: np.ndarray
    lengths: np.ndarray
    documents: np.ndarray
    entities: np.ndarray
    entity_lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def window_starts(self, span: int) -> np.ndarray:
        """Indices where ``span`` consecutive segments of one document begin."""
        if len(self) < span:
            return np.zeros(0, dtype=np.int64)
        same = self.documents[: len(self) - span + 1] == self.documents[span - 1 :]
        return np.flatnonzero(same)

    def batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """Tensors for the segment indices ``rows`` (any shape), with attention masks."""
        width = np.arange(self.ids.shape[1])
        entity_width = np.arange(self.entities.shape[1])
        return {
            "ids": torch.from_numpy(self.ids[rows].astype(np.int64)),
            "mask": torch.from_numpy((width < self.lengths[rows][..., None]).astype(np.int64)),
            "entities": torch.from_numpy(self.entities[rows].astype(np.int64)),
            "entity_mask": torch.from_numpy(
                (entity_width < self.entity_lengths[rows][..., None]).astype(np.int64)
            ),
        }


def mix_segments(main: Segments, extra: Segments, repeat: int) -> Segments:
    """``main`` followed by ``repeat`` copies of ``extra``, each copy its own documents, so that
    no window spans two copies or two sources."""
    if (
        main.ids.shape[1:] != extra.ids.shape[1:]
        or main.entities.shape[1:] != extra.entities.shape[1:]
    ):
        raise DataError(
            f"cannot mix segments of width {extra.ids.shape[1]} into {main.ids.shape[1]}"
        )
    parts, documents = [main] + [extra] * repeat, []
    next_document = 0
    for part in parts:
        documents.append(part.documents + next_document)
        next_document += int(part.documents.max(initial=-1)) + 1
    fields = ("ids", "lengths", "entities", "entity_lengths")
    arrays = {name: np.concatenate([getattr(part, name) for part in parts]) for name in fields}
    return Segments(documents=np.concatenate(documents), **arrays)


def load_segments(
    source: str | Path,
    tokenizer: PreTrainedTokenizerFast,
    segment_length: int,
    entity_length: int,
    cache_dir: str | Path,
) -> Segments:
    """Split every document under ``source`` into segments and entity lists, tokenise, cache."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or directory")
    extractor = default_entity_extractor()
    key = f"{_fingerprint(source, tokenizer)}-{segment_length}-{entity_length}-{extractor.name}"
    path = Path(cache_dir) / f"{source.name}-segments-{key}.npz"
    if path.is_file():
        with np.load(path) as arrays:
            return Segments(**{name: arrays[name] for name in arrays.files})

    tokens = Tokens(tokenizer)
    pad = tokenizer.pad_token_id
    rows, entity_rows, documents = [], [], []
    for index, (_, text) in enumerate(
        tqdm(list(read_texts(source)), desc=f"segmenting {source.name}")
    ):
        for segment in cut(text, tokens, segment_length, extractor):
            entity_ids = tokens.ids(format_entities(segment.entities))[: entity_length - 1]
            rows.append(segment.ids[:segment_length])
            entity_rows.append([*entity_ids, tokenizer.eos_token_id])
            documents.append(index)
    arrays = {
        "ids": pad_ids(rows, segment_length, pad),
        "lengths": np.array([len(r) for r in rows], dtype=np.int64),
        "documents": np.array(documents, dtype=np.int64),
        "entities": pad_ids(entity_rows, entity_length, pad),
        "entity_lengths": np.array([len(r) for r in entity_rows], dtype=np.int64),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("wb") as handle:  # two runs may build one cache
        np.savez(handle, **arrays)
    return Segments(**arrays)
