"""The baselines' memory modes: what each reads before a segment and how its memory grows."""

import pytest
import torch

from r3mem.losses import lm_loss
from r3mem.training.stages import objective
from r3mem.training.train import window_loss

from .conftest import make_base, randomize
from .test_model import ids, wrapped

LM_ONLY = dict(lambda_rec=0.0, lambda_doc=0.0, lambda_ent=0.0, lambda_cyc=0.0)


def window(**overrides):
    return wrapped(memory_mode="window", **LM_ONLY, **overrides)


def test_window_is_full_attention_over_the_past_segments():
    """At init the adapters are identities, so reading a segment after a window of past
    segments must give what the base gives over the concatenated text, padding dropped."""
    base, model = make_base("llama"), window(window_segments=3)  # 2 past segments of 8
    first, second, third = ids(2, 8, seed=1), ids(2, 8, seed=2), ids(2, 8, seed=3)
    second_mask = torch.ones_like(second)
    second_mask[1, 5:] = 0  # row 1's second segment has 5 real tokens, then padding
    state = model.init_memory(2)
    assert state.memory.shape == (2, 0, 32)
    state = model(input_ids=first, memory=state).memory
    state = model(input_ids=second, memory=state, attention_mask=second_mask).memory
    assert state.memory.shape == (2, 16, 32)
    # Padding is dropped and the window shifted: 3 empty (zero) slots, then 13 tokens.
    assert (state.memory[1, :3] == 0).all() and (state.memory[1, 3:] != 0).any(-1).all()
    out = model(input_ids=third, memory=state, labels=third)
    for row, real in enumerate((8, 5)):
        text = torch.cat([first[row], second[row, :real], third[row]])[None]
        expected = base(text).logits[:, -9:]  # from the last past token to the last token
        torch.testing.assert_close(out.logits[row], expected[0, 1:], atol=1e-4, rtol=1e-4)
    # The first token is scored from the last past token: no token goes unscored.
    rows = [torch.cat([first[r], second[r, :n], third[r]])[None] for r, n in ((0, 8), (1, 5))]
    expected_loss = torch.stack([lm_loss(base(r).logits[:, -9:], r[:, -9:]) for r in rows]).mean()
    torch.testing.assert_close(out.loss, expected_loss, atol=1e-4, rtol=1e-4)


def test_window_keeps_only_the_last_segments():
    model = window(window_segments=2)
    segments = [ids(1, 8, seed=s) for s in range(3)]
    state = model.init_memory(1)
    for segment in segments:
        state = model(input_ids=segment, memory=state).memory
    assert state.memory.shape == (1, 8, 32)
    torch.testing.assert_close(state.memory[0], model.embed_tokens(segments[-1])[0])


@pytest.mark.parametrize("mode", ["window", "accumulate"])
def test_a_growing_memory_written_in_a_batch_matches_rows_alone(mode):
    model = wrapped(memory_mode=mode, window_segments=3, **LM_ONLY)
    randomize(model)
    long, short = ids(1, 20, seed=1), ids(1, 5, seed=2)  # segments of 8: 3 chunks and 1
    batch = torch.cat([long, torch.cat([short, torch.zeros(1, 15, dtype=torch.long)], 1)])
    mask = torch.ones_like(batch)
    mask[1, 5:] = 0
    state = model.write(model.init_memory(2), batch, attention_mask=mask)
    alone = [model.write(model.init_memory(1), row).memory[0] for row in (long, short)]
    torch.testing.assert_close(state.memory[0], alone[0], atol=1e-5, rtol=1e-4)
    if mode == "window":  # padding chunks leave a window as it was: 11 empty slots, 5 tokens
        torch.testing.assert_close(state.memory[1, -5:], alone[1], atol=1e-5, rtol=1e-4)
        assert (state.memory[1, :-5] == 0).all()
    else:  # one summary per chunk in every row; the short row's first is its own
        assert state.memory.shape == (2, 4 * 4, 32)
        torch.testing.assert_close(state.memory[1, :8], alone[1], atol=1e-5, rtol=1e-4)


def test_none_reads_each_segment_alone():
    base, model = make_base("llama"), wrapped(memory_mode="none", **LM_ONLY)
    state = model.init_memory(2)
    for seed in range(3):
        text = ids(2, 8, seed=seed)
        out = model(input_ids=text, memory=state, labels=text)
        expected = base(text).logits
        torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.loss, lm_loss(expected, text), atol=1e-5, rtol=1e-5)
        state = out.memory
        assert (
            state.memory.shape == (2, 0, 32) and state.tokens_seen.tolist() == [8 * (seed + 1)] * 2
        )


def test_accumulate_keeps_each_summary_up_to_the_cap():
    model = wrapped(memory_mode="accumulate", summary_segments=2, **LM_ONLY)  # m = 4
    randomize(model)
    state = model.init_memory(1)
    torch.testing.assert_close(state.memory[0], model.initial_memory)
    summaries = []
    for seed in range(3):
        state = model(input_ids=ids(1, 8, seed=seed), memory=state).memory
        summaries.append(state.memory[:, -4:])
    assert state.memory.shape == (1, 8, 32)  # capped at 2 segments' summaries
    torch.testing.assert_close(state.memory, torch.cat(summaries[1:], dim=1))
    # Every kept summary is read: changing the older one changes the next prediction.
    text = ids(1, 8, seed=9)
    older_changed = state.memory.clone()
    older_changed[:, :4] = summaries[0]
    a = model(input_ids=text, memory=state).logits
    b = model(
        input_ids=text,
        memory=type(state)(older_changed, "document", state.tokens_seen, state.fingerprint),
    ).logits
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("mode", ["window", "none"])
def test_modes_without_a_written_memory_refuse_to_reconstruct(mode):
    model = wrapped(memory_mode=mode, **LM_ONLY)
    state = model.init_memory(1)
    with pytest.raises(ValueError, match=f"memory_mode='{mode}' keeps no written memory"):
        model.reconstruct(state, 4)
    with pytest.raises(ValueError, match="keeps no written memory"):
        model.decode_logits(state, ids(1, 4))


@pytest.mark.parametrize(
    ("mode", "trained"),
    [
        ("none", {"lora_"}),
        ("window", {"lora_"}),
        ("accumulate", {"lora_", "write_embeddings", "initial_memory"}),
        ("recurrent", {"lora_", "write_embeddings", "initial_memory", "level_embeddings"}),
    ],
)
def test_a_training_step_reaches_what_the_mode_uses(mode, trained):
    overrides = {} if mode == "recurrent" else LM_ONLY
    model = wrapped(memory_mode=mode, bptt_segments=2, doc_cue_length=2, **overrides)
    randomize(model)
    batch = {
        "ids": ids(2, 16).view(2, 2, 8),
        "mask": torch.ones(2, 2, 8, dtype=torch.long),
        "entities": ids(2, 8, seed=4).view(2, 2, 4),
        "entity_mask": torch.ones(2, 2, 4, dtype=torch.long),
    }
    loss, terms = window_loss(model, batch, objective(model.config))
    assert set(terms) == ({"lm"} if overrides else {"lm", "rec", "ent", "cyc", "doc"})
    loss.backward()
    reached = {
        name
        for name, param in model.trainable_parameters().items()
        if param.grad is not None and param.grad.abs().sum() > 0
    }
    for part in trained:
        assert any(part in name for name in reached), part
    for part in {"write_embeddings", "initial_memory", "level_embeddings"} - trained:
        assert part not in reached, part
    before = loss.item()
    optimizer = torch.optim.SGD(model.trainable_parameters().values(), lr=0.05)
    for _ in range(5):
        optimizer.step()
        optimizer.zero_grad()
        loss, _ = window_loss(model, batch, objective(model.config))
        loss.backward()
    assert loss.item() < before
