"""r3mem train: the full objective runs, resumes exactly, and two processes stay in step."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from r3mem import R3MemModel
from r3mem.training.batches import training_data
from r3mem.training.train import TrainConfig, train

from .test_train_base import SAMPLE


def adapter_config(base_dir, out, r3mem_overrides=None, **overrides) -> TrainConfig:
    r3mem = dict(
        num_memory_tokens=2, segment_length=16, adapter_rank=4, lora_rank=4, bptt_segments=2,
        doc_cue_length=4,
    ) | (r3mem_overrides or {})  # fmt: skip
    fields = dict(
        base_model=base_dir, train_data=SAMPLE, valid_data=SAMPLE, out_dir=str(out),
        cache_dir=str(out.parent / "cache"), r3mem=r3mem, entity_length=8, batch_size=2,
        steps=4, warmup=1, save_every=2, eval_every=2, eval_segments=4, lr=1e-2,
    )  # fmt: skip
    return TrainConfig(**{**fields, **overrides})


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_every_term_is_logged_and_the_adapter_loads(base_dir, tmp_path):
    model = train(adapter_config(base_dir, tmp_path / "run"))
    records = metrics(tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for name in ("loss_lm", "loss_rec", "loss_ent", "loss_cyc", "loss_doc"):
        assert all(r[name] > 0 for r in records), name
    assert "rec_token_acc" in records[1] and 0 <= records[-1]["rec_token_acc"] <= 1
    loaded = R3MemModel.from_pretrained(tmp_path / "run" / "adapter")
    for name, param in model.trainable_parameters().items():
        assert torch.equal(param, loaded.trainable_parameters()[name]), name


def test_switched_off_terms_are_not_computed(base_dir, tmp_path):
    off = {"lambda_cyc": 0.0, "lambda_ent": 0.0}
    train(adapter_config(base_dir, tmp_path / "run", r3mem_overrides=off, steps=1))
    assert "loss_cyc" not in metrics(tmp_path / "run")[0]
    assert "loss_ent" not in metrics(tmp_path / "run")[0]


def test_resume_continues_the_loss_curve_exactly(base_dir, tmp_path):
    train(adapter_config(base_dir, tmp_path / "straight"))
    train(adapter_config(base_dir, tmp_path / "stopped"), stop_after=2)
    train(adapter_config(base_dir, tmp_path / "stopped"), resume=True)
    straight, resumed = metrics(tmp_path / "straight"), metrics(tmp_path / "stopped")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(straight, resumed, strict=True):
        assert a["loss_lm"] == pytest.approx(b["loss_lm"], rel=1e-5)
        assert a["loss_rec"] == pytest.approx(b["loss_rec"], rel=1e-5)


def test_a_run_starts_from_saved_adapters_and_resumes_from_its_own(base_dir, tmp_path):
    """init_adapter: the saved weights, then this run's own objective; its checkpoint wins."""
    first = train(adapter_config(base_dir, tmp_path / "first")).trainable_parameters()
    off = {"lambda_cyc": 0.0, "lambda_ent": 0.0}  # another objective
    init = str(tmp_path / "first" / "adapter")
    after = train(
        adapter_config(base_dir, tmp_path / "on", off, init_adapter=init, lr=1e-12, steps=1)
    )
    fresh = train(adapter_config(base_dir, tmp_path / "fresh", off, lr=1e-12, steps=1))
    for name, param in after.trainable_parameters().items():
        assert torch.allclose(param, first[name], atol=1e-9), name
    assert not all(torch.allclose(p, first[n]) for n, p in fresh.trainable_parameters().items())
    train(adapter_config(base_dir, tmp_path / "straight", off, init_adapter=init))
    train(adapter_config(base_dir, tmp_path / "cut", off, init_adapter=init), stop_after=2)
    train(adapter_config(base_dir, tmp_path / "cut", off, init_adapter=init), resume=True)
    straight, resumed = metrics(tmp_path / "straight"), metrics(tmp_path / "cut")
    assert [r["loss_rec"] for r in straight] == pytest.approx([r["loss_rec"] for r in resumed])
    with pytest.raises(ValueError, match=r"adapter_rank=4 \(here 8\)"):
        train(adapter_config(base_dir, tmp_path / "wide", {"adapter_rank": 8}, init_adapter=init))


def test_mix_data_is_drawn_as_often_as_its_repeats_and_never_across_sources(base_dir, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "a.txt").write_text(
        "Paris is the capital of France. It has 2,102,650 residents.\n\n" * 6, encoding="utf-8"
    )
    chunked = [{"name": "read", "steps": 2, "chunk_fraction": 0.5}]
    config = adapter_config(base_dir, tmp_path / "run", stage=chunked, steps=None)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    books, book_corpus = training_data(config, tokenizer)
    mixed_config = dataclasses.replace(config, mix_data=str(extra), mix_repeat=3)
    mixed, corpus = training_data(mixed_config, tokenizer)
    alone, alone_corpus = training_data(
        dataclasses.replace(config, train_data=str(extra)), tokenizer
    )
    assert len(mixed) == len(books) + 3 * len(alone)
    assert (mixed.ids[len(books) :] == np.tile(alone.ids, (3, 1))).all()
    source = np.repeat([0, 1, 2, 3], [len(books)] + [len(alone)] * 3)
    starts = mixed.window_starts(2)  # a window of two segments never spans two sources
    assert (source[starts] == source[starts + 1]).all()
    assert len(starts) == len(books.window_starts(2)) + 3 * len(alone.window_starts(2))
    expected = [*book_corpus.tokens.tolist(), *alone_corpus.tokens.tolist() * 3]
    assert corpus.tokens.tolist() == expected
    assert len(corpus.starts) == len(book_corpus.starts) + 3 * len(alone_corpus.starts)
    train(mixed_config)  # and a run trains on it
    with pytest.raises(ValueError, match="mix_repeat"):
        dataclasses.replace(config, mix_data=str(extra), mix_repeat=0)
    with pytest.raises(ValueError, match="name mix_data too"):
        dataclasses.replace(config, mix_repeat=3)


def test_two_processes_keep_identical_parameters(base_dir, tmp_path):
    config = adapter_config(base_dir, tmp_path / "ddp", steps=3)
    (tmp_path / "ddp").mkdir()
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    # accelerate's multi-process launcher; on a machine without a GPU it runs MULTI_CPU (gloo).
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    launch += ["--num_processes=2", "--num_machines=1", "--num_cpu_threads_per_process=1"]
    launch += ["--mixed_precision=no", "--dynamo_backend=no"]
    worker = str(Path(__file__).with_name("ddp_worker.py"))
    subprocess.run([*launch, worker, json.dumps(fields)], check=True, timeout=600)
    first = load_file(str(tmp_path / "ddp" / "rank0.safetensors"))
    second = load_file(str(tmp_path / "ddp" / "rank1.safetensors"))
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    start = R3MemModel.from_pretrained(tmp_path / "ddp" / "adapter")  # rank 0 wrote it
    assert torch.equal(start.write_embeddings, first["write_embeddings"])


def test_unknown_r3mem_field_is_refused(base_dir, tmp_path):
    with pytest.raises(ValueError, match="memory_tokens"):
        adapter_config(base_dir, tmp_path, r3mem_overrides={"memory_tokens": 4})


def test_fp16_is_refused_for_want_of_loss_scaling(base_dir, tmp_path):
    with pytest.raises(ValueError, match="fp16' needs loss scaling"):
        adapter_config(base_dir, tmp_path, mixed_precision="fp16")


def test_kv_memory_form_trains(base_dir, tmp_path):
    train(adapter_config(base_dir, tmp_path / "kv", {"memory_form": "kv"}, steps=2))
    record = metrics(tmp_path / "kv")[-1]
    assert all(record[f"loss_{n}"] > 0 for n in ("lm", "rec", "ent", "doc"))
    # 1 - cosine: ~1e-8 here (the kv memory's cosine is dominated by what every text shares),
    # so only its presence and range are checked; its value is tested in test_losses.
    assert -1e-6 < record["loss_cyc"] <= 2


def test_gradient_checkpointing_trains_the_same_model(base_dir, tmp_path):
    plain = train(adapter_config(base_dir, tmp_path / "plain", steps=2))
    saved = train(adapter_config(base_dir, tmp_path / "ckpt", steps=2, gradient_checkpointing=True))
    assert all(layer.gradient_checkpointing for layer in saved.base.model.layers)
    for name, param in plain.trainable_parameters().items():
        torch.testing.assert_close(saved.trainable_parameters()[name], param, msg=name)
    with pytest.raises(ValueError, match="gradient_checkpointing needs memory_form"):
        adapter_config(base_dir, tmp_path, {"memory_form": "kv"}, gradient_checkpointing=True)


def test_adapters_train_in_float32_on_a_half_precision_base(base_dir, tmp_path, monkeypatch):
    """A GPU loads a base in its stored dtype (the shipped one is float16); the adapters took
    that dtype and Adam's second step gave NaN on an H200. Training keeps them in float32;
    a memory then runs in the stored dtype, and exact recall stays exact."""
    from transformers import AutoModelForCausalLM

    from r3mem import checkpoint
    from r3mem.memory import Memory

    half = tmp_path / "half"
    AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float16).save_pretrained(half)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (half / name).write_bytes((Path(base_dir) / name).read_bytes())
    monkeypatch.setattr(checkpoint, "default_load_dtype", lambda: "auto")  # as on a GPU
    assert checkpoint.load_base(half).dtype == torch.float16
    model = train(adapter_config(str(half), tmp_path / "run", steps=3))
    assert all(r["loss_rec"] == r["loss_rec"] < 100 for r in metrics(tmp_path / "run"))
    assert {p.dtype for p in model.trainable_parameters().values()} == {torch.float32}
    memory = Memory.load(tmp_path / "run" / "adapter")
    assert memory.model.base.dtype == torch.float16
    text = "Alice kept three hives of bees behind the mill, and sold the honey in Lisbon."
    memory.remember(text)
    hits = memory.recall("Where did Alice sell honey?", k=3, exact=True)
    assert len(hits) == min(3, len(memory.bank.entries)) > 1  # paragraphs of 16 tokens
    assert all(hit.text.strip() and hit.text.strip() in text for hit in hits), hits


def test_non_finite_gradients_stop_before_the_update(base_dir, tmp_path, monkeypatch):
    from r3mem.training import train as training

    real = training.window_loss
    calls = []

    def poisoned(model, batch, stage):
        loss, values = real(model, batch, stage)
        calls.append(1)
        return (loss * float("nan"), values) if len(calls) == 3 else (loss, values)

    monkeypatch.setattr(training, "window_loss", poisoned)
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"step 3 \(stage 'train'\): non-finite"):
        train(adapter_config(base_dir, out, steps=4, save_every=2))
    assert [r["step"] for r in metrics(out)] == [1, 2]  # step 3 never logged nor applied
    weights = load_file(str(out / "checkpoint" / "weights.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
