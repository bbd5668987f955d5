import hashlib
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from r3mem import R3MemConfig, R3MemModel
from r3mem.checkpoint import CONFIG_NAME, WEIGHTS_NAME

from .conftest import make_base, randomize
from .test_model import SMALL, ids


def trained(arch: str = "llama", **overrides) -> R3MemModel:
    model = R3MemModel.from_base(make_base(arch), R3MemConfig(**{**SMALL, **overrides}))
    randomize(model, seed=7)
    return model


def outputs(model: R3MemModel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        state = model.write(model.init_memory(2), ids(2, 11))
        lm = model(input_ids=ids(2, 6, seed=4), memory=state).logits
        rec = model.decode_logits(state, ids(2, 5, seed=5))
    return state.memory, lm, rec


@pytest.mark.parametrize(
    ("arch", "decoder", "form"),
    [
        ("llama", "inverse", "embedding"),
        ("gpt2", "separate", "embedding"),
        ("qwen2", "inverse", "kv"),
    ],
)
def test_round_trip_is_bit_for_bit(tmp_path, arch, decoder, form):
    model = trained(arch, decoder=decoder, memory_form=form)
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {CONFIG_NAME, WEIGHTS_NAME}
    loaded = R3MemModel.from_pretrained(tmp_path, base_model=make_base(arch))
    assert loaded.config == model.config
    for before, after in zip(outputs(model), outputs(loaded), strict=True):
        assert torch.equal(before, after)


def test_loads_the_base_from_a_local_path(tmp_path):
    base_dir = tmp_path / "base"
    make_base("qwen2").save_pretrained(base_dir)
    model = R3MemModel.from_base(
        AutoModelForCausalLM.from_pretrained(base_dir), R3MemConfig(**SMALL)
    )
    randomize(model)
    model.save_pretrained(tmp_path / "adapter")
    meta = json.loads((tmp_path / "adapter" / CONFIG_NAME).read_text())
    assert meta["base_model"]["name_or_path"] == str(base_dir)
    by_path = R3MemModel.from_pretrained(tmp_path / "adapter", base_model=str(base_dir))
    by_name = R3MemModel.from_pretrained(tmp_path / "adapter")  # base named in the config
    for other in (by_path, by_name):
        for before, after in zip(outputs(model), outputs(other), strict=True):
            assert torch.equal(before, after)


@pytest.mark.parametrize(
    ("base_kwargs", "field"),
    [({"hidden": 48}, "hidden_size"), ({"layers": 3}, "num_layers"), ({"vocab": 80}, "vocab_size")],
)
def test_mismatched_base_is_refused(tmp_path, base_kwargs, field):
    trained().save_pretrained(tmp_path)
    other = make_base("llama", **base_kwargs)
    with pytest.raises(ValueError, match=field):
        R3MemModel.from_pretrained(tmp_path, base_model=other)
    assert not any("lora_" in n for n, _ in other.named_parameters())  # left untouched


def test_corrupt_weights_are_refused(tmp_path):
    trained().save_pretrained(tmp_path)
    (tmp_path / WEIGHTS_NAME).write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match=WEIGHTS_NAME):
        R3MemModel.from_pretrained(tmp_path, base_model=make_base("llama"))


def test_weights_of_another_config_are_refused(tmp_path):
    trained(adapter_rank=4).save_pretrained(tmp_path)
    meta = json.loads((tmp_path / CONFIG_NAME).read_text())
    meta["r3mem_config"]["adapter_rank"] = 8
    (tmp_path / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="shape"):
        R3MemModel.from_pretrained(tmp_path, base_model=make_base("llama"))


def test_missing_or_corrupt_config(tmp_path):
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        R3MemModel.from_pretrained(tmp_path, base_model=make_base("llama"))
    (tmp_path / CONFIG_NAME).write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a valid r3mem adapter config"):
        R3MemModel.from_pretrained(tmp_path, base_model=make_base("llama"))


def test_failed_save_keeps_the_previous_adapter(tmp_path, monkeypatch):
    model = trained()
    model.save_pretrained(tmp_path)
    good = (tmp_path / WEIGHTS_NAME).read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("r3mem.checkpoint.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(tmp_path)
    assert (tmp_path / WEIGHTS_NAME).read_bytes() == good


def test_adapters_saved_before_the_memory_modes_load_as_they_were(tmp_path):
    """adapter_config.json files written before memory_mode (and write_positions) existed
    load as recurrent models whose write tokens follow the text, with the fingerprint
    memories were stamped with then."""
    model = trained(write_positions="after_text")
    model.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / CONFIG_NAME).read_text())
    for name in ("memory_mode", "window_segments", "summary_segments", "write_positions"):
        del meta["r3mem_config"][name]
    del meta["r3mem_config"]["lm_reader"]  # and before the LM path could be the frozen base
    del meta["r3mem_config"]["part_tokens"]  # and before adapters named a memory's parts
    (tmp_path / CONFIG_NAME).write_text(json.dumps(meta))
    loaded = R3MemModel.from_pretrained(tmp_path, base_model=make_base("llama"))
    assert (loaded.config.memory_mode, loaded.config.write_positions) == ("recurrent", "after_text")
    assert loaded.config.lm_reader == "adapted" and loaded.config.part_tokens is None
    for before, after in zip(outputs(model), outputs(loaded), strict=True):
        assert torch.equal(before, after)
    old = hashlib.sha256(json.dumps(model.spec, sort_keys=True).encode())
    fields = {"num_memory_tokens": 4, "memory_form": "embedding", "reversible": True}
    old.update(json.dumps(fields, sort_keys=True).encode())
    old.update(model.embed_tokens.weight.detach()[:8].float().numpy().tobytes())
    assert loaded.fingerprint == model.fingerprint == old.hexdigest()


def test_a_memory_mode_is_saved_and_marks_its_memories(tmp_path):
    model = trained(memory_mode="accumulate", summary_segments=3)
    model.save_pretrained(tmp_path)
    loaded = R3MemModel.from_pretrained(tmp_path, base_model=make_base("llama"))
    assert loaded.config.memory_mode == "accumulate" and loaded.config.summary_segments == 3
    for before, after in zip(outputs(model), outputs(loaded), strict=True):
        assert torch.equal(before, after)
    assert model.fingerprint != trained().fingerprint  # a recurrent model refuses its memories
