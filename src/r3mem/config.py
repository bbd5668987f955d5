"""R3MemConfig: every knob of the memory adapter, validated once, saved as JSON with the weights."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LEVELS = ("document", "paragraph", "entity")
DECODERS = ("inverse", "separate", "frozen")
MEMORY_FORMS = ("embedding", "kv")
# What a segment reads before its text (DESIGN 4's baselines share the cell and the loop):
# recurrent: m memory vectors rewritten every segment (R³Mem, RMT, ICAE);
# accumulate: every segment's m summary vectors kept side by side (AutoCompressor);
# window: the raw tokens of the previous segments, in full attention; none: nothing.
MEMORY_MODES = ("recurrent", "accumulate", "window", "none")
# Where the write tokens sit: ``fixed``, at segment_length + j after the text's start whatever
# its length (every slot at the same offsets from the text, in every segment); ``after_text``,
# right after the last real token (adapters saved before the field existed).
WRITE_POSITIONS = ("fixed", "after_text")
# Who reads the text on the LM path: ``adapted``, the pass that writes the memory (LoRA and
# couplings on the text too); ``base``, the frozen base over the memory, in a pass of its own,
# so the text is read exactly as the base reads it and the memory can only add to it.
LM_READERS = ("adapted", "base")
# Terms that read a memory back, or search it: they need a memory that holds vectors the
# model wrote.
DECODING_TERMS = ("lambda_rec", "lambda_doc", "lambda_ent", "lambda_cyc", "lambda_ret")


@dataclass
class R3MemConfig:
    """Configuration of R³Mem's adapters and objective (DESIGN sections 2.1-2.5).

    Invalid values raise ``ValueError`` at construction, naming the field.
    """

    num_memory_tokens: int = 8
    segment_length: int = 64
    adapter_rank: int = 16
    bptt_segments: int = 2
    # Loss weights of DESIGN 2.5: L = L_lm + λ_rec L_rec + λ_doc L_doc + λ_ent L_ent + λ_cyc L_cyc.
    lambda_rec: float = 1.0
    lambda_doc: float = 0.5
    lambda_ent: float = 0.25
    lambda_cyc: float = 0.1
    doc_cue_length: int = 8
    # L_ret (DESIGN 2.6, off by default): a cue of retrieval_cue_length tokens cut from a
    # paragraph must find that paragraph's memory among the batch's, by the cosine recall uses.
    lambda_ret: float = 0.0
    retrieval_cue_length: int = 16
    retrieval_temperature: float = 0.05
    # Ablation switches.
    reversible: bool = True
    decoder: str = "inverse"
    memory_form: str = "embedding"
    memory_mode: str = "recurrent"
    window_segments: int = 2  # window: segments in full attention, the current one included
    summary_segments: int = 8  # accumulate: the most segments whose summaries are kept
    write_positions: str = "fixed"
    lm_reader: str = "adapted"
    # The parts a Memory on these adapters writes each entry in, unless asked otherwise (None:
    # the entry length): fewer tokens a slot for adapters measured to give back less of an
    # entry (DESIGN 2.4). Not part of training; a memory file keeps the length it was made at.
    part_tokens: int | None = None
    # LoRA on the attention and MLP projections (DESIGN 2.1: couplings alone are not enough).
    lora: bool = True
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | None = (
        None  # None: every linear layer inside the decoder blocks
    )
    extra: dict[str, Any] = field(
        default_factory=dict
    )  # free-form notes (data, seed, ...), saved as-is

    def __post_init__(self) -> None:
        for name in (
            "num_memory_tokens",
            "segment_length",
            "adapter_rank",
            "bptt_segments",
            "window_segments",
            "summary_segments",
        ):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("doc_cue_length", self.doc_cue_length, minimum=0)
        if self.part_tokens is not None:
            _check_int("part_tokens", self.part_tokens, minimum=1)
            if self.part_tokens > self.segment_length:
                raise ValueError(
                    f"R3MemConfig.part_tokens must be at most segment_length "
                    f"{self.segment_length}, got {self.part_tokens}"
                )
        _check_int("retrieval_cue_length", self.retrieval_cue_length, minimum=1)
        if self.lora:
            _check_int("lora_rank", self.lora_rank, minimum=1)
        for name in (*DECODING_TERMS, "lora_alpha", "retrieval_temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"R3MemConfig.{name} must be a number >= 0, got {value!r}")
            setattr(self, name, float(value))
        if self.retrieval_temperature == 0:
            raise ValueError("R3MemConfig.retrieval_temperature must be > 0")
        if not 0.0 <= float(self.lora_dropout) < 1.0:
            raise ValueError(
                f"R3MemConfig.lora_dropout must be in [0, 1), got {self.lora_dropout!r}"
            )
        for name in ("reversible", "lora"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"R3MemConfig.{name} must be true or false, got {getattr(self, name)!r}"
                )
        _check_choice("decoder", self.decoder, DECODERS)
        _check_choice("memory_form", self.memory_form, MEMORY_FORMS)
        _check_choice("memory_mode", self.memory_mode, MEMORY_MODES)
        _check_choice("write_positions", self.write_positions, WRITE_POSITIONS)
        _check_choice("lm_reader", self.lm_reader, LM_READERS)
        self._check_mode()
        if not self.reversible and self.decoder == "inverse":
            raise ValueError(
                "R3MemConfig.decoder='inverse' needs reversible=True: plain residual adapters "
                "have no inverse; use decoder='separate' or 'frozen'"
            )
        if self.lora_target_modules is not None and (
            not isinstance(self.lora_target_modules, list)
            or not self.lora_target_modules
            or not all(isinstance(n, str) and n for n in self.lora_target_modules)
        ):
            raise ValueError(
                "R3MemConfig.lora_target_modules must be None or a non-empty list of module names, "
                f"got {self.lora_target_modules!r}"
            )
        if not isinstance(self.extra, dict):
            raise ValueError(f"R3MemConfig.extra must be a dict, got {type(self.extra).__name__}")

    def _check_mode(self) -> None:
        """The baselines' modes hold no rewritten m-vector memory: no kv form for them, and no
        decoding term where there is nothing the model wrote to decode."""
        if self.memory_mode == "recurrent":
            return
        if self.memory_form != "embedding":
            raise ValueError(
                f"R3MemConfig.memory_form='{self.memory_form}' needs memory_mode='recurrent'; "
                f"memory_mode='{self.memory_mode}' works on embeddings"
            )
        if self.memory_mode in ("window", "none"):
            for name in DECODING_TERMS:
                if getattr(self, name) > 0:
                    raise ValueError(
                        f"R3MemConfig.{name} must be 0 with memory_mode='{self.memory_mode}': "
                        "it keeps no written memory to decode"
                    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> R3MemConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"R3MemConfig: unknown field(s) {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> R3MemConfig:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("R3MemConfig JSON must be an object")
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> R3MemConfig:
        try:
            return cls.from_json(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"R3MemConfig.{name} must be an integer >= {minimum}, got {value!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"R3MemConfig.{name} must be one of {', '.join(choices)}; got {value!r}")
