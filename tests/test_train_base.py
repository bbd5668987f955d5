import json
import os
import warnings

import pytest
from accelerate.state import AcceleratorState
from transformers import AutoModelForCausalLM, AutoTokenizer

from r3mem.assets import SAMPLE_TEXT, asset_path
from r3mem.cli import main
from r3mem.data import load_corpus
from r3mem.sources import DataError
from r3mem.training.base import BaseTrainConfig, train_base

SAMPLE = str(asset_path(SAMPLE_TEXT))


def tiny_config(tmp_path, **overrides) -> BaseTrainConfig:
    fields = dict(
        train_data=SAMPLE, valid_data=SAMPLE, out_dir=str(tmp_path / "base"),
        cache_dir=str(tmp_path / "cache"), vocab_size=320, hidden_size=32, num_layers=1,
        num_heads=2, intermediate_size=64, seq_len=32, batch_size=2, steps=6, warmup=2,
        save_every=2, eval_every=3, eval_batches=2,
    )  # fmt: skip
    return BaseTrainConfig(**{**fields, **overrides})


def losses(out) -> list[float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


def test_trains_saves_the_hugging_face_layout_and_resumes_exactly(tmp_path):
    straight = train_base(tiny_config(tmp_path / "a"))
    assert AutoModelForCausalLM.from_pretrained(straight).config.vocab_size == 320
    tokenizer = AutoTokenizer.from_pretrained(straight)
    assert tokenizer.decode(tokenizer("It was the best of times").input_ids) == (
        "It was the best of times"
    )
    # Stop after 4 steps, then resume to 6: the loss curve continues as if never stopped.
    train_base(tiny_config(tmp_path / "b"), stop_after=4)
    resumed = train_base(tiny_config(tmp_path / "b"), resume=True)
    assert losses(resumed) == pytest.approx(losses(straight), rel=1e-5)
    assert len(losses(resumed)) == 6


def test_corpus_cache_is_reused(tmp_path):
    config = tiny_config(tmp_path)
    out = train_base(config)
    tokenizer = AutoTokenizer.from_pretrained(out)
    first = load_corpus(SAMPLE, tokenizer, config.cache_dir)
    cached = sorted((tmp_path / "cache").iterdir())
    again = load_corpus(SAMPLE, tokenizer, config.cache_dir)
    assert sorted((tmp_path / "cache").iterdir()) == cached
    assert (first.tokens == again.tokens).all() and len(first.doc_ids) == 1
    assert first.windows(8, 3, seed=0, draw=5).tolist() == again.windows(8, 3, 0, 5).tolist()


def test_corpus_cache_follows_content_not_place_or_mtime(tmp_path):
    config = tiny_config(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(train_base(config))
    original = tmp_path / "books" / "a.txt"
    original.parent.mkdir()
    original.write_text("It was the best of times, it was the worst of times.")
    load_corpus(original.parent, tokenizer, tmp_path / "c")
    cached = sorted((tmp_path / "c").iterdir())
    # The same files copied elsewhere, with new mtimes: the cache is served as is.
    copy = tmp_path / "remounted" / "books" / "a.txt"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(original.read_bytes())
    os.utime(copy, (1, 1))
    load_corpus(copy.parent, tokenizer, tmp_path / "c")
    assert sorted((tmp_path / "c").iterdir()) == cached
    # Same size, one byte changed: never served stale.
    copy.write_text("It was the best of times, it was the worst of timez.")
    changed = load_corpus(copy.parent, tokenizer, tmp_path / "c")
    assert len(list((tmp_path / "c").iterdir())) == len(cached) + 2
    assert tokenizer.decode(changed.tokens[:-1].tolist()).endswith("timez.")


def test_bad_input_fails_with_one_clear_message(tmp_path, capsys):
    with pytest.raises(DataError, match="no such file"):
        train_base(tiny_config(tmp_path, train_data=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="hidden_size"):
        tiny_config(tmp_path, hidden_size=0)
    config = tmp_path / "c.toml"
    config.write_text("steps = 3\nbatch = 4\n")
    assert main(["train-base", "--config", str(config)]) == 2
    assert "unknown key(s) batch" in capsys.readouterr().err
    config.write_text("steps = [")
    assert main(["train-base", "--config", str(config)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_corrupt_checkpoint_is_refused_and_a_failed_save_keeps_the_last(tmp_path, monkeypatch):
    config = tiny_config(tmp_path)
    train_base(config, stop_after=2)
    weights = tmp_path / "base" / "checkpoint" / "weights.safetensors"
    good = weights.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("r3mem.training.common.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        train_base(config, resume=True)
    assert weights.read_bytes() == good  # the interrupted save left the checkpoint whole
    monkeypatch.undo()
    weights.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt checkpoint"):
        train_base(config, resume=True)


def test_bf16_on_a_cpu_without_bf16_instructions_warns(tmp_path, monkeypatch):
    from r3mem.training import common

    without = tmp_path / "ice_lake"
    without.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    with_bf16 = tmp_path / "sapphire_rapids"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16\n")
    arm = tmp_path / "neoverse"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert common.cpu_has_native_bf16(without) is False
    assert common.cpu_has_native_bf16(with_bf16) is True
    assert common.cpu_has_native_bf16(arm) is True
    assert common.cpu_has_native_bf16(tmp_path / "absent") is None

    def accelerator(mixed_precision: str) -> None:
        AcceleratorState._reset_state(reset_partial_state=True)  # one precision per process
        common.make_accelerator(mixed_precision)
        AcceleratorState._reset_state(reset_partial_state=True)

    monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="mixed_precision = 'no'"):
        accelerator("bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        accelerator("no")
        monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: True)
        accelerator("bf16")


def test_a_diverging_run_stops_before_the_update(tmp_path):
    # lr 1e30: the first update sends every weight to ~1e30, the next loss is not finite.
    with pytest.raises(FloatingPointError, match="step 2: non-finite gradients"):
        train_base(tiny_config(tmp_path, lr=1e30, warmup=1, steps=4))
    assert len(losses(tmp_path / "base")) == 1  # step 2 never logged
