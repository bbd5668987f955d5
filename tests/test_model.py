import pytest
import torch

from r3mem import MemoryState, R3MemConfig, R3MemModel
from r3mem.model import last, recur

from .conftest import VOCAB, make_base, randomize

SMALL = dict(num_memory_tokens=4, segment_length=8, adapter_rank=4, lora_rank=4)


def wrapped(arch: str = "llama", **overrides) -> R3MemModel:
    return R3MemModel.from_base(make_base(arch), R3MemConfig(**{**SMALL, **overrides}))


def ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


FORMS = ["embedding", "kv"]


@pytest.fixture(params=FORMS)
def form(request) -> str:
    return request.param


def test_identity_at_init(arch, form):
    text = ids(2, 12)
    expected = make_base(arch)(text).logits
    model = wrapped(arch, memory_form=form)
    got = model(input_ids=text).logits
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-5


def test_trainable_parameters_are_the_adapters_only():
    model = wrapped()
    names = set(model.trainable_parameters())
    assert {"write_embeddings", "initial_memory", "level_embeddings"} <= names
    assert any(n.startswith("couplings.adapters.0.") for n in names)
    assert any("lora_A" in n for n in names)
    assert all(
        n.startswith(("couplings.", "write_", "initial_", "level_")) or "lora_" in n for n in names
    )
    assert len(model.couplings) == 2 and model.decoder_couplings is None
    without_lora = wrapped(lora=False)
    assert not any("lora_" in n for n in without_lora.trainable_parameters())


def test_only_adapters_get_gradients_and_the_base_stays_untouched(form):
    model = wrapped(memory_form=form)
    randomize(model)  # non-zero adapters, so every trainable part is on the gradient path
    before = {n: p.clone() for n, p in model.base.named_parameters() if "lora_" not in n}
    optimizer = torch.optim.AdamW(model.trainable_parameters().values(), lr=1e-2)
    text = ids(2, 8)
    state = model.write(model.init_memory(2), text)
    out = model(input_ids=text, memory=state, labels=text)
    from r3mem.losses import reconstruction_loss

    (out.loss + reconstruction_loss(model, state, text)).backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name
    optimizer.step()
    for name, param in model.base.named_parameters():
        if name in before:
            assert torch.equal(param, before[name]), name


def test_write_and_reconstruct_shapes(arch, form):
    model = wrapped(arch, memory_form=form)
    # kv: each slot holds keys and values of 2 layers: 2 x 2 x (kv heads x head dim).
    heads = 4 if arch == "gpt2" else 2
    width = 32 if form == "embedding" else 2 * 2 * heads * 8
    state = model.init_memory(3)
    assert state.memory.shape == (3, 4, width) and state.level == "document"
    state = model.write(state, ids(3, 5))
    assert state.memory.shape == (3, 4, width)
    assert state.tokens_seen.tolist() == [5, 5, 5]
    out = model.reconstruct(state, max_new_tokens=6)
    assert out.shape == (3, 6) and out.dtype == torch.long
    cue = model.reconstruct(state, max_new_tokens=3, cue_ids=ids(3, 2))
    assert cue.shape == (3, 3)


@pytest.mark.parametrize(("form", "reach"), [("embedding", 3), ("kv", 2)])
def test_how_far_back_the_document_memory_reaches(form, reach):
    """The embedding form carries its whole history. The kv form carries layers - 1 segments
    (3 layers here): a layer's slots are computed from hidden states that read the past only
    through the layers below it, and layer 0's from the write embeddings alone."""
    model = R3MemModel.from_base(
        make_base("llama", layers=3), R3MemConfig(**SMALL, memory_form=form)
    )
    randomize(model)
    text = ids(1, 24)  # three segments of 8
    state = model.write(model.init_memory(1), text).memory
    for segment in range(3):
        other = text.clone()
        other[:, 8 * segment] = (other[:, 8 * segment] + 1) % VOCAB
        changed = not torch.allclose(model.write(model.init_memory(1), other).memory, state)
        assert changed == (segment >= 3 - reach), segment


def test_memory_is_at_the_embedding_scale():
    model = wrapped()
    state = model.write(model.init_memory(2), ids(2, 8))
    norms = state.memory.norm(dim=-1)
    assert torch.allclose(norms, model.embed_norm.expand_as(norms), rtol=1e-4)


def test_long_input_is_written_segment_by_segment(form):
    model = wrapped(memory_form=form)
    randomize(model)
    text = ids(2, 20)  # segment_length 8: segments of 8, 8, 4
    state = model.write(model.init_memory(2), text)
    chained = model.init_memory(2)  # the LM path, one segment at a time, carries the same memory
    for start in (0, 8, 16):
        chained = model(input_ids=text[:, start : start + 8], memory=chained).memory
    torch.testing.assert_close(state.memory, chained.memory)
    assert state.tokens_seen.tolist() == [20, 20]
    other = text.clone()  # the last segment is in the memory
    other[:, 16] = (other[:, 16] + 1) % VOCAB
    assert not torch.allclose(model.write(model.init_memory(2), other).memory, state.memory)
    one_pass = model(input_ids=text[:, :8], memory=model.init_memory(2)).memory
    assert not torch.allclose(one_pass.memory, state.memory)


def test_batching_matches_rows_alone_and_padding_is_ignored(form):
    model = wrapped(memory_form=form)
    randomize(model)
    long, short = ids(1, 13, seed=1), ids(1, 5, seed=2)
    batch = torch.cat([long, torch.cat([short, torch.zeros(1, 8, dtype=torch.long)], 1)])
    mask = torch.ones_like(batch)
    mask[1, 5:] = 0
    state = model.write(model.init_memory(2), batch, attention_mask=mask)
    alone = [model.write(model.init_memory(1), row) for row in (long, short)]
    torch.testing.assert_close(state.memory[0], alone[0].memory[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(state.memory[1], alone[1].memory[0], atol=1e-5, rtol=1e-4)
    assert state.tokens_seen.tolist() == [13, 5]
    out = model.reconstruct(state, max_new_tokens=4)
    for row, single in enumerate(alone):
        assert torch.equal(out[row], model.reconstruct(single, max_new_tokens=4)[0])


def test_reconstruct_with_cache_matches_full_recomputation(arch, form):
    """Greedy decoding with the KV cache gives what full teacher-forced passes give."""
    model = wrapped(arch, memory_form=form)
    randomize(model)
    state = model.write(model.init_memory(2), ids(2, 8))
    out = model.reconstruct(state, max_new_tokens=6)
    with torch.no_grad():
        logits = model.decode_logits(state, out)
    assert torch.equal(logits.argmax(-1), out)


def test_reconstruct_runs_the_couplings_inverted():
    model = wrapped(lora=False)
    randomize(model.couplings)
    state = model.write(model.init_memory(1), ids(1, 8))
    inverse = model.decode_logits(state, ids(1, 5))
    model.config.decoder = "frozen"  # same weights, couplings off on the read path
    frozen = model.decode_logits(state, ids(1, 5))
    with model.couplings.use("forward"):
        model.config.decoder = "inverse"
        assert model.couplings.mode == "forward"
        again = model.decode_logits(state, ids(1, 5))
        assert model.couplings.mode == "forward"  # restored after the read
    assert not torch.allclose(inverse, frozen)
    torch.testing.assert_close(inverse, again)


def test_sampling_is_seeded_and_stops_at_eos():
    model = wrapped()
    randomize(model)
    state = model.write(model.init_memory(2), ids(2, 8))

    def sample(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return model.reconstruct(state, 8, do_sample=True, top_k=5, generator=generator)

    assert torch.equal(sample(0), sample(0))
    greedy = model.reconstruct(state, 8)
    eos = int(greedy[0, 2])
    stopped = model.reconstruct(state, 8, eos_token_id=eos)
    assert (stopped[0, 3:] == eos).all()


@pytest.mark.parametrize("decoder", ["separate", "frozen"])
def test_decoder_ablations(decoder):
    model = wrapped(decoder=decoder)
    if decoder == "separate":
        assert model.decoder_couplings is not None
        assert any("lora_A.decoder" in n for n in model.trainable_parameters())
    state = model.write(model.init_memory(2), ids(2, 8))
    assert model.reconstruct(state, 4).shape == (2, 4)


def test_residual_ablation_writes_and_reads():
    model = wrapped(reversible=False, decoder="separate")
    randomize(model)
    state = model.write(model.init_memory(1), ids(1, 8))
    assert model.reconstruct(state, 3).shape == (1, 3)


@pytest.mark.parametrize(("truncate", "reached"), [(None, True), (1, False), (2, True)])
def test_truncation_stops_gradients(truncate, reached):
    """recur(truncate=k) detaches the memory every k segments: the initial memory gets a
    gradient from the second segment's memory only when no cut lies between them."""
    model = wrapped()
    randomize(model)
    chunks = [(ids(1, 8, seed=s), torch.ones(1, 8, dtype=torch.long)) for s in (1, 2)]
    final = last(recur(model, model.init_memory(1), chunks, truncate=truncate))
    final.memory.memory.sum().backward()
    assert (model.initial_memory.grad is not None) == reached
    assert model.write_embeddings.grad is not None


def test_lm_loss_with_memory_scores_every_token(form):
    model = wrapped(memory_form=form)
    text = ids(2, 8)
    out = model(input_ids=text, memory=model.init_memory(2), labels=text)
    hidden_logits = out.logits
    assert hidden_logits.shape == (2, 8, VOCAB)
    no_memory = model(input_ids=text, labels=text)
    assert out.loss.item() > 0 and no_memory.loss.item() > 0
    assert not torch.isclose(out.loss, no_memory.loss)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m, s: m.write(s, torch.zeros(2, 0, dtype=torch.long)), ValueError, "empty input"),
        (lambda m, s: m.write(s, torch.zeros(2, 4)), TypeError, "integer tensor"),
        (lambda m, s: m.write(s, [[1, 2]]), TypeError, "torch.Tensor"),
        (lambda m, s: m.write(s, ids(3, 4)), ValueError, "batch mismatch"),
        (lambda m, s: m.write(s, ids(2, 4) + VOCAB), ValueError, "vocabulary"),
        (
            lambda m, s: m.write(s, ids(2, 4), attention_mask=torch.zeros(2, 4)),
            ValueError,
            "empty input",
        ),
        (lambda m, s: m.write(s, ids(2, 4), attention_mask=torch.ones(2, 3)), ValueError, "match"),
        (lambda m, s: m.reconstruct(s, 0), ValueError, "max_new_tokens"),
        (lambda m, s: m.init_memory(0), ValueError, "batch_size"),
        (lambda m, s: m.write("memory", ids(2, 4)), TypeError, "MemoryState"),
    ],
)
def test_bad_input_gets_one_clear_error(call, error, match):
    model = wrapped()
    state = model.init_memory(2)
    with pytest.raises(error, match=match):
        call(model, state)


def test_checkpointing_enabled_on_the_bare_base_is_refused():
    base = make_base("llama")
    enable = (
        getattr(base, "activation_checkpointing_enable", None) or base.gradient_checkpointing_enable
    )
    enable()
    with pytest.raises(ValueError, match="enable_gradient_checkpointing"):
        R3MemModel.from_base(base, R3MemConfig(**SMALL))


def test_memory_from_another_model_is_refused():
    state = wrapped(num_memory_tokens=4).init_memory(1)
    other = R3MemModel.from_base(make_base("llama", seed=5), R3MemConfig(**SMALL))
    with pytest.raises(ValueError, match="another base model"):
        other.reconstruct(state, 2)
    assert isinstance(state, MemoryState)


def test_kv_memory_is_attended_not_embedded():
    """In the kv form the memory changes what the text attends to, and the memory's width
    is 2 x layers x kv width: it is read as a cache, never fed as input vectors."""
    model = wrapped(memory_form="kv")
    randomize(model)
    text = ids(1, 6)
    one = model.write(model.init_memory(1), ids(1, 8, seed=1))
    two = model.write(model.init_memory(1), ids(1, 8, seed=2))
    first = model(input_ids=text, memory=one).logits
    second = model(input_ids=text, memory=two).logits
    assert not torch.allclose(first, second)
    assert model.form.heads == 2


def test_lm_reader_base_reads_the_text_as_the_frozen_base_and_the_memory_besides(form):
    """lm_reader = "base": the text is scored by the frozen base (exactly the base without a
    memory), the memory is written as by the adapted reader, and the LM loss trains the
    writer through the memory the base reads."""
    torch.manual_seed(0)
    adapted = wrapped(memory_form=form)
    randomize(adapted)
    model = wrapped(memory_form=form, lm_reader="base")
    model.load_state_dict(adapted.state_dict())
    text = ids(2, 12)
    with torch.no_grad(), model.bare():
        plain = model.base(input_ids=text).logits
    torch.testing.assert_close(model(input_ids=text).logits, plain)
    assert not torch.allclose(adapted(input_ids=text).logits, plain, atol=1e-3)
    segments = [(text[:, :6], torch.ones(2, 6, dtype=torch.long))]
    segments.append((text[:, 6:], torch.ones(2, 6, dtype=torch.long)))
    steps = list(recur(model, model.init_memory(2), segments, score=True))
    for mine, theirs in zip(steps, recur(adapted, adapted.init_memory(2), segments), strict=True):
        torch.testing.assert_close(mine.memory.memory, theirs.memory.memory)
    with torch.no_grad(), model.bare():
        alone = model.base(input_ids=text[:, 6:]).logits
    assert not torch.allclose(steps[1].logits, alone, atol=1e-3)  # the memory is read
    steps[1].loss.backward()
    assert model.write_embeddings.grad is not None and model.write_embeddings.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="lm_reader"):
        R3MemConfig(lm_reader="frozen")


@pytest.mark.parametrize(
    "overrides",
    [
        {"memory_form": "embedding"},
        {"memory_form": "kv"},
        {"memory_form": "kv", "lm_reader": "base"},
        {"memory_mode": "accumulate", "summary_segments": 2},
    ],
)
def test_generate_continues_the_lm_path_after_the_memory(overrides):
    model = wrapped(**overrides)
    randomize(model)
    state = model.write(model.init_memory(1), ids(1, 20))
    prompt = ids(1, 5, seed=3)
    out = model.generate(state, prompt, 3)
    assert out.shape == (1, 3)
    for step in range(3):  # each greedy token is forward's argmax on the memory and text so far
        so_far = torch.cat([prompt, out[:, :step]], dim=1)
        with torch.no_grad():
            logits = model(input_ids=so_far, memory=state).logits[:, -1]
        assert out[0, step] == logits.argmax(-1)[0]
    eos = int(out[0, 0])
    assert model.generate(state, prompt, 3, eos_token_id=eos).tolist() == [[eos]]  # stops
    with pytest.raises(ValueError, match="batch"):
        model.generate(state, ids(2, 5), 3)
