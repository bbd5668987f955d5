"""``r3mem train-base``: a byte-level BPE tokenizer and a small Llama trained from scratch.

No pretrained weights can be downloaded where r3mem must run offline, so the project trains
its own base on the Gutenberg books and ships it. The output directory is a plain Hugging Face
model: ``AutoModelForCausalLM.from_pretrained(out_dir)`` and ``AutoTokenizer`` load it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from ..data import Corpus, load_corpus, train_tokenizer
from .common import (
    Checkpoint,
    MetricsLog,
    RunConfig,
    check_finite,
    check_positive,
    make_accelerator,
    make_optimizer,
    make_schedule,
    run_steps,
)


@dataclass
class BaseTrainConfig(RunConfig):
    """One base-model run; every field can come from a TOML file under ``configs/``."""

    out_dir: str = "runs/base"
    vocab_size: int = 8192
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 688
    seq_len: int = 256
    batch_size: int = 16
    steps: int = 6000
    warmup: int = 200
    weight_decay: float = 0.1
    save_every: int = 250
    eval_every: int = 1000
    eval_batches: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "vocab_size", "hidden_size", "num_layers", "num_heads")
        check_positive(self, "intermediate_size", "seq_len", "eval_batches")
        if self.hidden_size % self.num_heads:
            raise ValueError("BaseTrainConfig.hidden_size must be divisible by num_heads")


def build_model(config: BaseTrainConfig, tokenizer) -> LlamaForCausalLM:
    torch.manual_seed(config.seed)
    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=4 * config.seq_len,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(llama)


@torch.no_grad()
def perplexity(model: LlamaForCausalLM, corpus: Corpus, config: BaseTrainConfig) -> float:
    """Perplexity on ``eval_batches`` windows of ``seq_len`` tokens, the same at every call."""
    model.eval()
    losses = []
    for i in range(config.eval_batches):
        batch = corpus.windows(config.seq_len, config.batch_size, seed=10_000 + config.seed, draw=i)
        batch = batch.to(model.device)
        losses.append(model(input_ids=batch, labels=batch).loss.float().item())
    model.train()
    return math.exp(sum(losses) / len(losses))


def train_base(
    config: BaseTrainConfig, resume: bool = False, stop_after: int | None = None
) -> Path:
    """Train (or resume) and write the Hugging Face layout to ``config.out_dir``.

    ``stop_after`` ends this invocation at that step (checkpointed), so a long run can be
    spread over several sessions with ``resume``.
    """
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = out / "tokenizer"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        train_tokenizer(config.train_data, config.vocab_size, tokenizer_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    train = load_corpus(config.train_data, tokenizer, config.cache_dir)
    valid = load_corpus(config.valid_data, tokenizer, config.cache_dir)

    accelerator = make_accelerator(config.mixed_precision)
    model = build_model(config, tokenizer)
    optimizer = make_optimizer(list(model.parameters()), config.lr, config.weight_decay)
    checkpoint = Checkpoint(out / "checkpoint")
    step, elapsed = 0, 0.0
    if resume and checkpoint.exists():
        weights, optimizer_state, state = checkpoint.load()
        result = model.load_state_dict(weights, strict=False)
        if result.unexpected_keys or set(result.missing_keys) - {"lm_head.weight"}:  # tied
            raise ValueError(
                f"{checkpoint.directory}: checkpoint does not fit this model ({result})"
            )
        optimizer.load_state_dict(optimizer_state)
        step, elapsed = state["step"], state["elapsed"]
    schedule = make_schedule(optimizer, config, step)
    model, optimizer = accelerator.prepare(model, optimizer)
    main = accelerator.is_main_process  # the one process that logs and saves
    log = MetricsLog(out / "metrics.jsonl", resume_step=step if resume else None) if main else None
    params = sum(p.numel() for p in model.parameters())
    tokens_per_step = config.batch_size * config.grad_accum * config.seq_len
    model.train()

    def train_step(step: int) -> tuple[dict, int]:
        optimizer.zero_grad()
        loss_sum = 0.0
        for micro in range(config.grad_accum):
            draw = [step, micro, accelerator.process_index]  # resumed runs see the same batches
            batch = train.windows(config.seq_len, config.batch_size, config.seed, draw)
            batch = batch.to(accelerator.device)
            loss = model(input_ids=batch, labels=batch).loss
            accelerator.backward(loss / config.grad_accum)
            loss_sum += loss.item() / config.grad_accum
        norm = accelerator.clip_grad_norm_(model.parameters(), config.clip)
        check_finite(norm, f"step {step + 1}", {"loss": loss_sum})
        optimizer.step()
        schedule.step()
        return {"loss": loss_sum, "lr": schedule.get_last_lr()[0]}, tokens_per_step

    def evaluate(step: int) -> dict:
        if step % config.eval_every == 0 or step == config.steps:
            return {"valid_ppl": perplexity(model, valid, config)}
        return {}

    def save(step: int, elapsed: float, tokens: int) -> None:
        weights = accelerator.unwrap_model(model).state_dict()
        weights.pop("lm_head.weight", None)
        state = {"step": step, "elapsed": elapsed, "params": params, "config": asdict(config)}
        checkpoint.save(weights, optimizer, state)

    run_steps(
        start=(step, elapsed, step * tokens_per_step),
        last=config.steps if stop_after is None else min(stop_after, config.steps),
        total=config.steps,
        train_step=train_step,
        evaluate=evaluate,
        save=save,
        saving=lambda step: step % config.save_every == 0,
        log=log,
        desc="train-base",
        show=("loss",),
    )
    if main:
        accelerator.unwrap_model(model).save_pretrained(out)
        tokenizer.save_pretrained(out)
    accelerator.wait_for_everyone()
    return out
