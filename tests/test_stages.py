"""Staged training: stages parse and inherit the run's values, the learning rate and the data
follow the stage of each step, --resume continues exactly across a stage boundary, and each
stage's end is kept as adapters."""

import json
import math
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from r3mem.checkpoint import WEIGHTS_NAME, read_adapter_config
from r3mem.data import load_corpus, load_segments
from r3mem.losses import reconstruction_loss
from r3mem.training.batches import draw_batch
from r3mem.training.common import load_config
from r3mem.training.stages import build_stages, objective, stage_at
from r3mem.training.train import STAGES, TrainConfig, train, window_loss

from .conftest import randomize
from .test_model import ids, wrapped
from .test_train import adapter_config, metrics

AUTOENCODE = {"bptt_segments": 1, "lambda_lm": 0.0, "lambda_doc": 0.0, "lambda_ent": 0.0}
AUTOENCODE |= {"lambda_cyc": 0.0}
NO_TERMS = ("lambda_lm", "lambda_rec", "lambda_doc", "lambda_ent", "lambda_cyc")
TWO_STAGES = [
    {"name": "ae", "steps": 3, "segment_length": 8, "schedule": "constant", **AUTOENCODE},
    {"name": "full", "steps": 3, "lr": 5e-3, "chunk_fraction": 0.5},
]
# The whole objective read by the frozen base, L_lm distilled from it.
THREE_STAGES = [*TWO_STAGES, {"name": "read", "steps": 2, "lm_reader": "base", "lm_distill": 1.0}]

TOML = """
base_model = "b"
lr = 2e-3
warmup = 10
[r3mem]
segment_length = 64
lambda_doc = 0.5
[[stage]]
name = "autoencode"
steps = 100
segment_length = 16
bptt_segments = 1
lambda_lm = 0.0
lambda_doc = 0.0
lambda_ent = 0.0
[[stage]]
steps = 50
lr = 1e-3
"""


def test_stages_from_toml_inherit_the_run(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(TOML)
    config = load_config(TrainConfig, path, {})
    first, second = config.stages
    assert config.steps == 150
    assert (first.name, first.segment_length, first.lambda_lm, first.lr) == (
        "autoencode",
        16,
        0.0,
        2e-3,
    )
    assert (first.warmup, second.warmup) == (10, 0)  # only the first stage warms up
    assert (second.name, second.segment_length, second.bptt_segments) == ("stage2", 64, 2)
    assert (second.lambda_lm, second.lambda_doc, second.lr) == (1.0, 0.5, 1e-3)


def test_a_run_without_stages_is_one_stage_of_the_whole_objective():
    config = TrainConfig(r3mem={"lambda_cyc": 0.3}, steps=7, lr=1e-3, warmup=2)
    (stage,) = config.stages
    assert (stage.steps, stage.lr, stage.warmup, stage.lambda_lm, stage.lambda_cyc) == (
        7,
        1e-3,
        2,
        1.0,
        0.3,
    )
    assert TrainConfig().steps == 2000


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ([{"steps": 5, "segmentlength": 8}], "unknown key"),
        ([{"name": "x"}], "steps is required"),
        ([{"steps": 5, "segment_length": 128}], "exceeds the model's 64"),
        ([{"steps": 5, "schedule": "linear"}], "schedule must be one of"),
        ([{"steps": 0}], "invalid steps"),
        ([{"steps": 5, "chunk_fraction": 2}], "invalid chunk_fraction"),
        ([{"name": "a", "steps": 5}, {"name": "a", "steps": 5}], "two stages have this name"),
        ([{"steps": 5, "bptt_segments": 1}], "lambda_doc needs bptt_segments >= 2"),
        ([{"steps": 5, "doc_cue_length": 64}], "lambda_doc needs 0 < doc_cue_length"),
        ([{"steps": 5, "segment_length": 16, "lambda_doc": 0}], "lambda_ent needs whole"),
        ([{"steps": 5, "min_segment_length": 8, "lambda_doc": 0}], "lambda_ent needs whole"),
        (
            [{"steps": 5, "segment_length": 16, "min_segment_length": 32, "lambda_ent": 0.0}],
            "invalid min_segment_length = 32",
        ),
        ([{"steps": 5, "min_segment_length": 0}], "invalid min_segment_length"),
        (
            [{"steps": 5, "min_segment_length": True, "lambda_ent": 0.0}],
            "invalid min_segment_length = True",
        ),
        ([{"steps": 5, "batch_size": True}], "invalid batch_size = True"),
        (
            [{"steps": 5, "min_segment_length": 8, "lambda_ent": 0.0}],
            "lambda_doc needs 0 < doc_cue_length < min_segment_length",
        ),
        (
            [
                {
                    "steps": 5,
                    "min_segment_length": 16,
                    "lambda_ent": 0.0,
                    "lambda_ret": 1.0,
                    "retrieval_cue_length": 16,
                }
            ],
            "lambda_ret needs 0 < retrieval_cue_length < min_segment_length",
        ),
        ([{"steps": 5, **dict.fromkeys(NO_TERMS, 0.0)}], "nothing to train"),
        ([{"steps": 5, "lambda_ret": 1.0, "retrieval_cue_length": 64}], "retrieval_cue_length"),
        ([{"steps": 5, "lambda_ret": 1.0, "batch_size": 1}], "lambda_ret needs batch_size"),
        ([{"steps": 5, "lambda_ret": -1.0}], "invalid lambda_ret"),
        ([{"steps": 5, "lm_distill": 0.5, "lambda_lm": 0.0}], "lm_distill is a part of L_lm"),
        ([{"steps": 5, "lm_reader": "frozen"}], "lm_reader must be one of"),
        ("steps = 5", "stage must be list"),
    ],
)
def test_bad_stages_are_refused_with_the_stage_named(tables, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(r3mem={"segment_length": 64}, stage=tables)


def test_steps_beside_stages_must_be_their_sum():
    with pytest.raises(ValueError, match="stages sum to 5"):
        TrainConfig(stage=[{"steps": 5}], steps=6)
    assert TrainConfig(stage=[{"steps": 5}], steps=5).steps == 5


def test_learning_rate_and_stage_follow_the_global_step():
    run = {"steps": 1, "batch_size": 2, "lr": 1.0, "warmup": 2, "min_lr_ratio": 0.1}
    tables = [{"steps": 4, "schedule": "constant"}, {"steps": 5, "lr": 0.5}]
    stages = build_stages(tables, TrainConfig().model_config, run)
    assert [stage_at(stages, s) for s in (0, 3, 4, 8, 9)] == [
        (0, 0),
        (0, 3),
        (1, 0),
        (1, 4),
        (1, 5),
    ]
    first, second = stages
    assert [first.learning_rate(s) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
    assert second.learning_rate(0) == 0.5  # no warmup after the first stage: cosine from the top
    assert second.learning_rate(5) == pytest.approx(0.05)  # down to lr * min_lr_ratio
    assert second.learning_rate(2) < second.learning_rate(1) < second.learning_rate(0)


def test_batches_are_cut_to_the_stage_and_mix_running_text(base_dir, tmp_path):
    config = adapter_config(base_dir, tmp_path / "run", stage=TWO_STAGES, steps=None)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    segments = load_segments(config.train_data, tokenizer, 16, 8, config.cache_dir)
    corpus = load_corpus(config.train_data, tokenizer, config.cache_dir)
    autoencode, full = config.stages
    batch = draw_batch(segments, corpus, autoencode, [0, 1, 0, 0])
    assert batch["ids"].shape == batch["mask"].shape == (2, 1, 8)
    batch = draw_batch(segments, corpus, full, [0, 1, 0, 0])
    assert batch["ids"].shape == (2, 2, 16)
    # The second row is cut from the running text: every token real, no entity list, and its
    # two segments are consecutive tokens of the corpus.
    assert batch["mask"][1].all() and not batch["entity_mask"][1].any()
    stream = torch.from_numpy(corpus.tokens.astype("int64"))
    row = batch["ids"][1].flatten()
    starts = [i for i in range(len(stream) - 31) if torch.equal(stream[i : i + 32], row)]
    assert starts
    again = draw_batch(segments, corpus, full, [0, 1, 0, 0])
    assert all(torch.equal(again[k], batch[k]) for k in batch)


def test_min_segment_length_cuts_document_rows_shorter_and_draws_the_rest_alike(base_dir, tmp_path):
    config = adapter_config(base_dir, tmp_path / "run", stage=TWO_STAGES, steps=None)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    segments = load_segments(config.train_data, tokenizer, 16, 8, config.cache_dir)
    corpus = load_corpus(config.train_data, tokenizer, config.cache_dir)
    full = replace(config.stages[1], batch_size=8)
    whole = draw_batch(segments, corpus, full, [0, 1, 0, 0])
    varied = replace(full, min_segment_length=3, lambda_ent=0.0)
    lengths = []
    for draw in range(8):
        short = draw_batch(segments, corpus, varied, [0, draw, 0, 0])
        plain = draw_batch(segments, corpus, full, [0, draw, 0, 0])
        # the same rows, text and draws: only the document rows' masks end sooner
        assert all(torch.equal(short[k], plain[k]) for k in plain if k != "mask")
        assert torch.equal(short["mask"][4:], plain["mask"][4:])  # running text: whole
        assert (short["mask"][:4] <= plain["mask"][:4]).all()
        # still real tokens first, then padding: a cut, not holes
        real = short["mask"].sum(-1, keepdim=True)
        assert torch.equal(short["mask"], (torch.arange(16) < real).long())
        lengths += short["mask"][:4].sum(-1).flatten().tolist()
    assert 3 <= min(lengths) < max(lengths) <= 16
    again = draw_batch(segments, corpus, varied, [0, 1, 0, 0])
    assert torch.equal(again["mask"], draw_batch(segments, corpus, varied, [0, 1, 0, 0])["mask"])
    assert not torch.equal(again["mask"], whole["mask"])


def test_a_stage_of_drawn_lengths_trains_every_term_it_allows(base_dir, tmp_path):
    """Shortened segments in a window of two, read by the frozen base distilled from the
    text, with scheduled sampling, the document cue and the retrieval cue: every loss finite."""
    stage = [
        {"name": "lengths", "steps": 2, "min_segment_length": 6, "lambda_ent": 0.0,
         "lambda_ret": 1.0, "rec_sampling": 0.25, "lm_reader": "base", "lm_distill": 1.0,
         "chunk_fraction": 0.5}
    ]  # fmt: skip
    out = tmp_path / "run"
    config = adapter_config(
        base_dir, out, {"retrieval_cue_length": 3}, stage=stage, steps=None, eval_every=100
    )
    train(config)
    rows = metrics(out)
    assert len(rows) == 2
    for name in ("loss_lm", "loss_rec", "loss_doc", "loss_ret", "loss_cyc"):
        assert all(math.isfinite(row[name]) and row[name] > 0 for row in rows), name


def test_resume_across_a_stage_boundary_continues_exactly(base_dir, tmp_path):
    straight = tmp_path / "straight"
    train(adapter_config(base_dir, straight, stage=THREE_STAGES, steps=None, eval_every=100))
    stopped = tmp_path / "stopped"
    model = train(
        adapter_config(base_dir, stopped, stage=THREE_STAGES, steps=None, eval_every=100),
        stop_after=2,
    )
    assert model.config.lm_reader == "adapted"  # stopped before the stage that switches it
    model = train(
        adapter_config(base_dir, stopped, stage=THREE_STAGES, steps=None, eval_every=100),
        resume=True,
    )
    config = json.loads((stopped / "adapter" / "adapter_config.json").read_text())
    assert model.config.lm_reader == config["r3mem_config"]["lm_reader"] == "base"
    a, b = metrics(straight), metrics(stopped)
    assert [r["stage"] for r in a] == ["ae"] * 3 + ["full"] * 3 + ["read"] * 2
    assert [r["lr"] for r in a[:6]] == pytest.approx([1e-2] * 3 + [5e-3, 3.875e-3, 1.625e-3])
    assert set(a[0]) >= {"loss_rec"} and "loss_lm" not in a[0]  # autoencoding only
    assert {"loss_lm", "loss_rec", "loss_doc"} <= set(a[-1])
    # The end of each stage is evaluated, the short stage also at its own length.
    assert "rec_stage_token_acc" in a[2] and "rec_token_acc" in a[2]
    assert "rec_token_acc" in a[5] and "rec_stage_token_acc" not in a[5]
    for x, y in zip(a, b, strict=True):
        assert x["tokens"] == y["tokens"]
        for key in x:
            if key.startswith("loss_"):
                assert x[key] == pytest.approx(y[key], rel=1e-5), (x["step"], key)
    state = json.loads((stopped / "checkpoint" / "state.json").read_text())
    assert state["config"]["stage"] == THREE_STAGES
    # Each stage's end is kept as adapters, the same in both runs; the last is the final one.
    ends = {name: stopped / STAGES / name for name in ("ae", "full", "read")}
    weights = {name: load_file(str(end / WEIGHTS_NAME)) for name, end in ends.items()}
    for name in ends:
        same = load_file(str(straight / STAGES / name / WEIGHTS_NAME))
        assert all(torch.equal(same[k], v) for k, v in weights[name].items()), name
    final = load_file(str(stopped / "adapter" / WEIGHTS_NAME))
    assert all(torch.equal(final[k], v) for k, v in weights["read"].items())
    assert not all(torch.equal(final[k], v) for k, v in weights["full"].items())
    readers = {
        name: read_adapter_config(end)["r3mem_config"]["lm_reader"] for name, end in ends.items()
    }
    assert readers == {"ae": "adapted", "full": "adapted", "read": "base"}


@pytest.mark.parametrize("form", ["embedding", "kv"])
def test_the_first_segment_s_lm_pass_writes_its_paragraph_memory(form):
    """window_loss takes the first segment's paragraph memory from its LM pass (both read the
    initial memory) and writes the others alone: L_rec over two segments must equal the
    reconstruction losses of paragraph memories written one by one."""
    torch.manual_seed(0)
    model = wrapped(memory_form=form, doc_cue_length=3)
    randomize(model)
    text = torch.stack([ids(2, 8, seed=1), ids(2, 8, seed=2)], dim=1)  # [B, S=2, L]
    mask = torch.ones_like(text)
    mask[1, 0, 5:] = 0
    batch = {"ids": text, "mask": mask}
    batch |= {"entities": text[..., :4], "entity_mask": torch.ones_like(text[..., :4])}
    stage = replace(objective(model.config), lambda_ent=0.0, lambda_cyc=0.0, lambda_doc=0.0)
    with torch.no_grad():
        _, terms = window_loss(model, batch, stage)
        alone = []
        for t in range(2):
            paragraph = model.write(model.init_memory(2, "paragraph"), text[:, t], mask[:, t])
            alone.append(reconstruction_loss(model, paragraph, text[:, t], mask[:, t]))
    assert terms["rec"] == pytest.approx(((alone[0] + alone[1]) / 2).item(), rel=1e-5)
