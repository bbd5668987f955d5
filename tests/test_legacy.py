"""Files made by r3mem before its core was reshaped (tests/fixtures/legacy, written by make.py
at the revision made.json names) still load and give the outputs that code gave."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from r3mem import Memory, R3MemModel
from r3mem.checkpoint import load_base
from r3mem.keywords import keywords
from r3mem.training.train import TrainConfig, train

LEGACY = Path(__file__).with_name("fixtures") / "legacy"
_spec = importlib.util.spec_from_file_location("legacy_make", LEGACY / "make.py")
make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make)
MADE = json.loads((LEGACY / "made.json").read_text())


@pytest.mark.parametrize("name", list(make.ADAPTERS))
def test_adapters_give_the_outputs_they_gave(name):
    """(Saved before write_positions existed, they read as ``after_text``.)"""
    golden = load_file(str(LEGACY / "golden.safetensors"))
    model = R3MemModel.from_pretrained(LEGACY / "adapters" / name, load_base(LEGACY / "base"))
    outputs = make.outputs(model.eval())
    expected = {k.split(".", 1)[1]: v for k, v in golden.items() if k.startswith(f"{name}.")}
    assert outputs.keys() == expected.keys()
    for key, value in expected.items():
        if value.dtype.is_floating_point:
            # float32 round-off moves with the kernels of a transformers release (5.24 moved
            # these logits by up to 4e-6); a changed computation moves them by far more.
            torch.testing.assert_close(outputs[key], value, rtol=1e-4, atol=2e-5, msg=key)
        else:
            assert torch.equal(outputs[key], value), key


def test_a_memory_file_recalls_what_it_recalled(tmp_path, monkeypatch):
    """Scored and read as then (no keyword level, no source lift, no entity guide); its
    keywords come from its exact recall."""
    memory = Memory.open(LEGACY / "memory.r3mem", make.model_dir(tmp_path / "model"))
    assert memory.entry_tokens == memory.model.config.segment_length  # as its entries were cut
    texts = memory.read(list(memory.bank.entries.values()), exact=True)
    assert [e.keywords for e in memory.bank.entries.values()] == [keywords(t) for t in texts]
    monkeypatch.setattr("r3mem.bank.KEYWORD_WEIGHT", 0.0)
    monkeypatch.setattr("r3mem.bank.SOURCE_WEIGHT", 0.0)
    for exact, hits in MADE["recall"].items():
        got = memory.recall("Dover", 3, exact == "True", guided=False)
        assert [(h.text, h.entry_id) for h in got] == [(text, i) for text, _, i in hits]
        assert [h.score for h in got] == pytest.approx([score for _, score, _ in hits], rel=1e-5)


def test_a_training_checkpoint_resumes_to_the_same_loss(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(LEGACY / "checkpoint", run / "checkpoint")
    paths = {"base_model": str(LEGACY / "base"), "train_data": make.SAMPLE}
    paths |= {"valid_data": make.SAMPLE, "out_dir": str(run), "cache_dir": str(tmp_path / "c")}
    # That run's doc_cue_length (8) left no segment to recall: L_doc was silently skipped then
    # and is refused now, so the config that resumes it says lambda_doc = 0.
    fields = {**MADE["train"], "r3mem": {**MADE["train"]["r3mem"], "lambda_doc": 0.0}}
    with pytest.raises(ValueError, match="before write_positions existed"):
        train(TrainConfig(**fields, **paths), resume=True)
    old = {**fields["r3mem"], "write_positions": "after_text"}
    train(TrainConfig(**{**fields, "r3mem": old}, **paths), resume=True)
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 3
    for key, value in MADE["train_step3"].items():
        assert last[key] == pytest.approx(value, rel=1e-5), key
