"""Packing a trained model into the shipped layout: half-precision files, same behaviour."""

import torch

from r3mem.memory import Memory
from r3mem.package import package_model


def test_package_round_trip(base_dir, adapter_dir, tmp_path):
    out = tmp_path / "packed"
    size = package_model(base_dir, adapter_dir, out)
    assert {p.name for p in out.iterdir()} == {"base", "adapter"}
    original, packed = Memory.load(adapter_dir), Memory.load(out)
    assert packed.model.write_embeddings.dtype == torch.float32  # computes in fp32 on CPU
    full = sum(p.numel() * 4 for p in original.model.base.parameters())
    assert size < 0.75 * full  # weights stored in half precision
    ids = original.encode("It was the best of times, it was the worst of times.")
    with torch.no_grad():
        a = original.model.write(original.model.init_memory(1), ids)
        b = packed.model.write(packed.model.init_memory(1), ids)
        torch.testing.assert_close(a.memory, b.memory, atol=2e-2, rtol=2e-2)
    assert not list(tmp_path.glob("*.tmp"))


def test_a_card_that_fails_leaves_the_previous_package_whole(base_dir, adapter_dir, tmp_path):
    import pytest

    out = tmp_path / "packed"
    package_model(base_dir, adapter_dir, out, card=lambda folder: (folder / "CARD").touch())
    assert (out / "CARD").is_file()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))

    def failing(folder):
        raise FileNotFoundError("lm.json")

    with pytest.raises(FileNotFoundError, match=r"lm\.json"):
        package_model(base_dir, adapter_dir, out, card=failing)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert not list(tmp_path.glob("packed.old"))


def test_package_on_a_named_base_keeps_only_the_adapters(
    base_dir, adapter_dir, tmp_path, monkeypatch
):
    """Adapters on a base r3mem knows by name ship alone; loading finds the base by name."""
    import json
    import shutil

    import pytest

    from r3mem.checkpoint import CONFIG_NAME
    from r3mem.pretrained import NAMED, NamedModel

    monkeypatch.setitem(
        NAMED, "tiny-named", NamedModel("no_pkg", "x.gguf", "nothing", "test", "none")
    )
    monkeypatch.setenv("R3MEM_CACHE", str(tmp_path / "cache"))
    shutil.copytree(base_dir, tmp_path / "cache" / "tiny-named")  # as if converted
    adapter = tmp_path / "adapter"
    shutil.copytree(adapter_dir, adapter)
    config = json.loads((adapter / CONFIG_NAME).read_text())
    config["base_model"]["name_or_path"] = "tiny-named"
    (adapter / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="trained on"):
        package_model("tiny-named", adapter_dir, tmp_path / "wrong")
    assert not (tmp_path / "wrong").exists() and not (tmp_path / "wrong.tmp").exists()
    out = tmp_path / "packed"
    package_model("tiny-named", adapter, out)
    assert {p.name for p in out.iterdir()} == {"adapter"}
    packed = Memory.load(out)
    assert packed.model.base.config.name_or_path == "tiny-named"
    ids = packed.encode("It was the best of times.")
    with torch.no_grad():
        a = Memory.load(adapter_dir).model.write(packed.model.init_memory(1), ids)
        b = packed.model.write(packed.model.init_memory(1), ids)
    torch.testing.assert_close(a.memory, b.memory, atol=2e-2, rtol=2e-2)
