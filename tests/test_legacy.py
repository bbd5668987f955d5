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
from r3mem.training.train import TrainConfig, train

LEGACY = Path(__file__).with_name("fixtures") / "legacy"
_spec = importlib.util.spec_from_file_location("legacy_make", LEGACY / "make.py")
make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make)
MADE = json.loads((LEGACY / "made.json").read_text())


@pytest.mark.parametrize("name", list(make.ADAPTERS))
def test_adapters_give_the_outputs_they_gave(name):
    golden = load_file(str(LEGACY / "golden.safetensors"))
    model = R3MemModel.from_pretrained(LEGACY / "adapters" / name, load_base(LEGACY / "base"))
    outputs = make.outputs(model.eval())
    expected = {k.split(".", 1)[1]: v for k, v in golden.items() if k.startswith(f"{name}.")}
    assert outputs.keys() == expected.keys()
    for key, value in expected.items():
        if value.dtype.is_floating_point:
            torch.testing.assert_close(outputs[key], value, rtol=1e-5, atol=1e-6, msg=key)
        else:
            assert torch.equal(outputs[key], value), key


def test_a_memory_file_recalls_what_it_recalled(tmp_path):
    memory = Memory.open(LEGACY / "memory.r3mem", make.model_dir(tmp_path / "model"))
    for exact, hits in MADE["recall"].items():
        got = memory.recall("Dover", 3, exact == "True")
        assert [(h.text, h.entry_id) for h in got] == [(text, i) for text, _, i in hits]
        assert [h.score for h in got] == pytest.approx([score for _, score, _ in hits], rel=1e-5)


def test_a_training_checkpoint_resumes_to_the_same_loss(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(LEGACY / "checkpoint", run / "checkpoint")
    paths = {"base_model": str(LEGACY / "base"), "train_data": make.SAMPLE}
    paths |= {"valid_data": make.SAMPLE, "out_dir": str(run), "cache_dir": str(tmp_path / "c")}
    train(TrainConfig(**MADE["train"], **paths), resume=True)
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 3
    for key, value in MADE["train_step3"].items():
        assert last[key] == pytest.approx(value, rel=1e-5), key
