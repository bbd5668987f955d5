"""End to end: write then reconstruct must learn to give back held-out random sequences.

A tiny Llama (1 layer, d=128) and its R³Mem adapters train together on random 16-token
sequences (vocabulary 64) compressed into 4 memory tokens, through ``write`` (forward
invocation) and the teacher-forced backward invocation; held-out sequences are then
reconstructed greedily with ``reconstruct``. Random tokens cannot be guessed, so every
correct token came through the memory. About 75 s on a 2-core CPU.
"""

import math
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from r3mem import R3MemConfig, R3MemModel
from r3mem.losses import reconstruction_loss, retrieval_loss
from r3mem.state import pooled

VOCAB, LENGTH, MEMORY, STEPS, BATCH = 64, 16, 4, 500, 64


def tiny_llama(vocab: int, hidden: int) -> LlamaForCausalLM:
    """One decoder layer of width ``hidden``: the toys' base, built from the current seed."""
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=64,
        )
    )


def test_write_then_reconstruct_learns_random_sequences():
    torch.manual_seed(0)
    base = tiny_llama(VOCAB, hidden=128)
    config = R3MemConfig(num_memory_tokens=MEMORY, segment_length=LENGTH, adapter_rank=16)
    model = R3MemModel.from_base(base, config)
    model.base.requires_grad_(True)  # the toy has no pretrained base to keep frozen
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=6e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / STEPS))
    )
    train = torch.Generator().manual_seed(1)
    held_out = torch.randint(0, VOCAB, (256, LENGTH), generator=torch.Generator().manual_seed(2))

    start = time.perf_counter()
    for _ in range(STEPS):
        text = torch.randint(0, VOCAB, (BATCH, LENGTH), generator=train)
        memory = model.write(model.init_memory(BATCH, level="paragraph"), text)
        loss = reconstruction_loss(model, memory, text)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
    seconds = time.perf_counter() - start

    model.eval()
    with torch.no_grad():
        memory = model.write(model.init_memory(len(held_out), level="paragraph"), held_out)
        restored = model.reconstruct(memory, max_new_tokens=LENGTH)
    accuracy = (restored == held_out).float().mean().item()
    print(
        f"learning test: greedy token accuracy {accuracy:.4f} after {STEPS} steps, {seconds:.1f} s"
    )
    assert accuracy >= 0.90


def test_l_ret_teaches_a_cue_to_find_its_paragraph():
    """L_ret alone: a 6-token span of a random 16-token paragraph must find that paragraph's
    memory among 128 held-out ones by pooled cosine, the score ``Memory.recall`` ranks with.
    Untrained, token overlap finds about half; L_ret must add a clear margin. About 10 s."""
    vocab, length, cue, batch = 256, 16, 6, 32
    torch.manual_seed(0)
    base = tiny_llama(vocab, hidden=64)
    config = R3MemConfig(num_memory_tokens=4, segment_length=length, adapter_rank=8, lora_rank=8)
    model = R3MemModel.from_base(base, config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.0)

    def write(text: torch.Tensor):
        return model.write(model.init_memory(len(text), level="paragraph"), text)

    def cues_of(text: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        start = torch.randint(0, length - cue + 1, (len(text),), generator=generator)
        return text.gather(1, start[:, None] + torch.arange(cue))

    @torch.no_grad()
    def recall_at_1() -> float:
        generator = torch.Generator().manual_seed(2)
        held_out = torch.randint(0, vocab, (128, length), generator=generator)
        queries = F.normalize(pooled(write(cues_of(held_out, generator)).memory), dim=-1)
        entries = F.normalize(pooled(write(held_out).memory), dim=-1)
        return ((queries @ entries.T).argmax(-1) == torch.arange(128)).float().mean().item()

    before = recall_at_1()
    generator = torch.Generator().manual_seed(1)
    for _ in range(150):
        text = torch.randint(0, vocab, (batch, length), generator=generator)
        loss = retrieval_loss(write(cues_of(text, generator)), write(text), temperature=0.05)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = recall_at_1()
    print(f"L_ret toy: recall@1 among 128 {before:.3f} -> {after:.3f}")
    assert after >= 0.75 and after >= before + 0.2
