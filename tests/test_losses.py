"""Every term of the objective must be differentiable and go down when optimised."""

from dataclasses import replace

import pytest
import torch

from r3mem.losses import (
    cycle_loss,
    distillation_loss,
    document_recall_loss,
    entity_loss,
    lm_loss,
    reconstruction_loss,
    retrieval_loss,
    token_loss,
)
from r3mem.training.stages import objective
from r3mem.training.train import base_reading, cut_cues, own_guesses, window_loss

from .conftest import randomize
from .test_model import ids, wrapped


def test_lm_loss_alignment():
    labels = torch.tensor([[1, 2, 3]])
    logits = torch.full((1, 3, 5), -10.0)
    logits[0, 0, 2] = logits[0, 1, 3] = 10.0  # position i predicts token i + 1
    assert lm_loss(logits, labels).item() < 1e-6
    assert token_loss(logits, labels).item() > 1.0
    masked = torch.tensor([[1, 2, -100]])
    assert lm_loss(logits, masked).item() < 1e-6


def _term(model, text, name):
    batch = text.shape[0]
    if name == "lm":
        return model(input_ids=text, memory=model.init_memory(batch), labels=text).loss
    if name == "doc":
        document = model.write(model.init_memory(batch), text)
        return document_recall_loss(model, document, text, cue_length=3)
    paragraph = model.write(model.init_memory(batch, level="paragraph"), text)
    if name == "rec":
        return reconstruction_loss(model, paragraph, text)
    if name == "ent":
        return entity_loss(model, paragraph, text[:, :4])
    return cycle_loss(model, paragraph, model.decode_logits(paragraph, text))


@pytest.mark.parametrize("form", ["embedding", "kv"])
@pytest.mark.parametrize("term", ["lm", "rec", "doc", "ent", "cyc"])
def test_each_term_decreases_on_a_toy_batch(term, form):
    torch.manual_seed(0)
    model = wrapped(memory_form=form)
    text = ids(4, 8)
    optimizer = torch.optim.Adam(model.trainable_parameters().values(), lr=1e-2)
    first = _term(model, text, term).item()
    for _ in range(10):
        optimizer.zero_grad()
        _term(model, text, term).backward()
        optimizer.step()
    assert _term(model, text, term).item() < 0.8 * first


def test_cue_must_leave_something_to_recall():
    model = wrapped()
    text = ids(1, 4)
    with pytest.raises(ValueError, match="cue_length"):
        document_recall_loss(model, model.init_memory(1), text, cue_length=4)


def test_training_objective_is_the_terms_defined_here():
    """window_loss shares one decoder pass between L_rec and L_cyc: the values must be the
    terms as defined one by one, with padding masked."""
    torch.manual_seed(0)
    model = wrapped(doc_cue_length=3)
    randomize(model)
    text, entities = ids(2, 8), ids(2, 5, seed=1)
    mask = torch.ones_like(text)
    mask[1, 6:] = 0
    batch = {"ids": text[:, None], "mask": mask[:, None]}
    batch |= {"entities": entities[:, None], "entity_mask": torch.ones_like(entities)[:, None]}
    with torch.no_grad():
        _, terms = window_loss(model, batch, objective(model.config))
        paragraph = model.write(model.init_memory(2, level="paragraph"), text, mask)
        logits = model.decode_logits(paragraph, text)
        expected = {
            "rec": reconstruction_loss(model, paragraph, text, mask),
            "cyc": cycle_loss(model, paragraph, logits, mask),
            "ent": entity_loss(model, paragraph, entities),
        }
    assert set(terms) == {"lm", "rec", "cyc", "ent"}  # one segment: no L_doc
    for name, value in expected.items():
        assert terms[name] == pytest.approx(value.item(), rel=1e-5), name


def test_retrieval_loss_rewards_the_matching_paragraph():
    torch.manual_seed(0)
    model = wrapped()
    paragraphs = model.write(model.init_memory(4, level="paragraph"), ids(4, 8))
    same = retrieval_loss(paragraphs, paragraphs, temperature=0.05)
    rolled = replace(paragraphs, memory=paragraphs.memory.roll(1, dims=0))
    assert same.item() < retrieval_loss(rolled, paragraphs, temperature=0.05).item()
    # identical cue and paragraph memories: the diagonal wins, the loss tends to 0 as the
    # temperature falls
    assert retrieval_loss(paragraphs, paragraphs, temperature=1e-3).item() < 1e-3
    with pytest.raises(ValueError, match="at least 2"):
        fewer = replace(paragraphs, memory=paragraphs.memory[:2], tokens_seen=torch.ones(2).long())
        retrieval_loss(paragraphs, fewer, 0.05)


def test_cues_are_spans_of_each_row_s_real_tokens():
    text = torch.arange(40).view(4, 10)
    mask = torch.ones_like(text)
    mask[2, 5:] = 0  # five real tokens: shorter than a cue
    stage = replace(objective(wrapped(doc_cue_length=3).config), retrieval_cue_length=4)
    at = torch.tensor([0.0, 0.999, 0.5, 0.5])
    cues, cue_mask = cut_cues(text, mask, at, stage)
    assert cues.shape == cue_mask.shape == (4, 4)
    assert cues[0].tolist() == [0, 1, 2, 3]  # at 0: the first tokens
    assert cues[1].tolist() == [16, 17, 18, 19]  # at ~1: the last whole cue
    assert cues[2].tolist() == [21, 22, 23, 24] and cue_mask[2].all()  # within the 5 real
    assert cues[3].tolist() == [33, 34, 35, 36]


def test_window_loss_adds_l_ret_that_trains_the_writer():
    torch.manual_seed(0)
    model = wrapped(doc_cue_length=3, lambda_ret=1.0, retrieval_cue_length=4)
    text = ids(4, 8)
    batch = {"ids": text[:, None], "mask": torch.ones_like(text)[:, None]}
    batch |= {"entities": ids(4, 5)[:, None], "entity_mask": torch.ones(4, 1, 5)}
    batch |= {"cue_at": torch.full((4, 1), 0.5)}
    loss, terms = window_loss(model, batch, objective(model.config))
    assert "ret" in terms and terms["ret"] > 0
    loss.backward()
    assert model.write_embeddings.grad is not None and model.write_embeddings.grad.abs().sum() > 0


def test_rec_sampling_feeds_the_decoder_its_own_guesses_where_drawn():
    torch.manual_seed(0)
    model = wrapped(doc_cue_length=3)
    randomize(model)
    text = ids(3, 8)
    paragraph = model.write(model.init_memory(3, level="paragraph"), text)
    guesses = model.decode_logits(paragraph, text).argmax(-1)
    assert not torch.equal(guesses, text)  # an untrained decoder guesses wrong somewhere
    none, every = torch.zeros_like(text, dtype=torch.bool), torch.ones_like(text, dtype=torch.bool)
    assert torch.equal(own_guesses(model, paragraph, text, none), text)
    assert torch.equal(own_guesses(model, paragraph, text, every), guesses)
    # in window_loss: rec_sampling swaps the inputs drawn below it, the labels stay the text
    batch = {"ids": text[:, None], "mask": torch.ones_like(text)[:, None]}
    batch |= {"entities": ids(3, 5)[:, None], "entity_mask": torch.ones(3, 1, 5)}
    batch |= {"cue_at": torch.zeros(3, 1), "sample_at": torch.zeros(3, 1, 8)}  # swap everywhere
    stage = replace(objective(model.config), lambda_cyc=0.0, lambda_ent=0.0, lambda_lm=0.0)
    with torch.no_grad():
        _, clean = window_loss(model, batch, stage)
        _, sampled = window_loss(model, batch, replace(stage, rec_sampling=0.5))
        expected = reconstruction_loss(model, paragraph, text)  # the text read, not guesses
        swapped = token_loss(model.decode_logits(paragraph, guesses), text)
    assert clean["rec"] == pytest.approx(expected.item(), rel=1e-5)
    assert sampled["rec"] == pytest.approx(swapped.item(), rel=1e-5)
    with pytest.raises(ValueError, match="rec_sampling"):
        replace(stage, rec_sampling=1.0)


def test_distillation_loss_is_the_kl_from_the_teacher_on_real_positions():
    torch.manual_seed(0)
    teacher, student = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert distillation_loss(teacher, teacher, mask).item() == pytest.approx(0.0, abs=1e-6)
    p, q = teacher.log_softmax(-1), student.log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1)  # [2, 5]: position i predicts token i + 1
    expected = (kl[0, :4].sum() + kl[1, :2].sum()) / 6  # only where a real token follows
    assert distillation_loss(student, teacher, mask).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="no position"):
        distillation_loss(student, teacher, torch.tensor([[1, 0, 0, 0, 0]] * 2))


def test_base_reading_is_the_frozen_base_on_the_window_text_without_padding():
    torch.manual_seed(0)
    model = wrapped()
    randomize(model)  # adapters that change the output: the teacher must not use them
    text = ids(2, 12)
    window = torch.zeros(2, 2, 8, dtype=torch.long)
    mask = torch.zeros(2, 2, 8, dtype=torch.long)
    window[:, 0, :5], mask[:, 0, :5] = text[:, :5], 1  # a short first segment, right-padded
    window[:, 1, :7], mask[:, 1, :7] = text[:, 5:], 1
    teacher = base_reading(model, window, mask)
    with torch.no_grad(), model.bare():
        plain = model.base(input_ids=text).logits
    torch.testing.assert_close(teacher[:, 0, :5], plain[:, :5], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(teacher[:, 1, :7], plain[:, 5:], rtol=1e-4, atol=1e-4)


def test_lm_distill_mixes_the_text_and_the_base_into_l_lm():
    torch.manual_seed(0)
    model = wrapped(doc_cue_length=3)
    randomize(model)
    text = ids(3, 8)
    window = text.view(3, 2, 4)
    batch = {"ids": window, "mask": torch.ones_like(window)}
    only_lm = replace(
        objective(model.config),
        bptt_segments=2,
        lambda_rec=0.0,
        lambda_cyc=0.0,
        lambda_ent=0.0,
        lambda_doc=0.0,
    )
    with torch.no_grad():
        _, plain = window_loss(model, batch, only_lm)
        _, half = window_loss(model, batch, replace(only_lm, lm_distill=0.5))
        _, full = window_loss(model, batch, replace(only_lm, lm_distill=1.0))
    assert full["lm"] > 0 and full["lm"] != pytest.approx(plain["lm"])
    assert half["lm"] == pytest.approx((plain["lm"] + full["lm"]) / 2, rel=1e-5)
    loss, _ = window_loss(model, batch, replace(only_lm, lm_distill=1.0))
    loss.backward()  # the KL reaches the adapters that write the memory
    assert model.write_embeddings.grad is not None and model.write_embeddings.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="lm_distill"):
        replace(only_lm, lm_distill=1.5)
