"""r3mem demo and Memory.load on a tiny model trained here (the shipped one may be absent)."""

import pytest

from r3mem.cli import main
from r3mem.demo import run_demo
from r3mem.memory import Memory


def test_demo_prints_sizes_reconstructions_and_perplexities(adapter_dir):
    lines: list[str] = []
    figures = run_demo(adapter_dir, show=lines.append)
    text = "\n".join(lines)
    assert "document memory: 2 slots" in text
    assert text.count("token accuracy") == 3 and "FROM MEMORY" in text
    assert "with memory" in text and "no memory" in text and "frozen base model alone" in text
    assert 0 <= figures["token_acc"] <= 1 and figures["ppl_memory"] > 1


def test_memory_load_and_bad_paths(adapter_dir, tmp_path, capsys):
    memory = Memory.load(adapter_dir)
    assert memory.encode("It was the best of times").shape[0] == 1
    with pytest.raises(ValueError, match="empty text"):
        memory.encode("")
    with pytest.raises(FileNotFoundError, match="no r3mem model"):
        Memory.load(tmp_path)
    assert main(["demo", "--model", str(tmp_path)]) == 2
    assert "no r3mem model" in capsys.readouterr().err


def test_memory_load_by_name_opens_the_packaged_adapters(adapter_dir, tmp_path, monkeypatch):
    """A packaged ``r3mem-NAME/adapter`` without ``base/`` loads the base its config names; a
    local folder of the same name wins; a missing package or base says what is missing."""
    import json
    import shutil

    import r3mem.checkpoint as checkpoint_module
    from r3mem.assets import asset_path, packaged_model
    from r3mem.checkpoint import CONFIG_NAME
    from r3mem.pretrained import NAMED

    assert packaged_model("smollm2-135m") == asset_path("r3mem-smollm2-135m")
    assert packaged_model("no-such-base") is None
    monkeypatch.chdir(tmp_path)
    if not (asset_path("r3mem-smollm2-135m") / "adapter").is_dir():
        with pytest.raises(FileNotFoundError, match=r"train_smollm2\.sh"):
            Memory.load("smollm2-135m")
    packaged = tmp_path / "assets" / "r3mem-tiny-named"
    monkeypatch.setattr(checkpoint_module, "packaged_model", {"tiny-named": packaged}.get)
    monkeypatch.setitem(NAMED, "tiny-named", NAMED["smollm2-135m"])
    with pytest.raises(FileNotFoundError, match="no adapters for it are packaged"):
        Memory.load("tiny-named")
    shutil.copytree(adapter_dir, packaged / "adapter")
    memory = Memory.load("tiny-named")
    assert memory.model_dir == packaged.resolve()
    loaded = Memory.load(adapter_dir).model.state_dict()
    assert all(v.equal(loaded[k]) for k, v in memory.model.state_dict().items())
    shutil.copytree(adapter_dir, tmp_path / "tiny-named")  # a local folder of that name wins
    assert Memory.load("tiny-named").model_dir == (tmp_path / "tiny-named").resolve()
    config = json.loads((packaged / "adapter" / CONFIG_NAME).read_text())
    config["base_model"]["name_or_path"] = "base"  # as packaged beside its base/
    (packaged / "adapter" / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match="base/ is missing"):
        Memory.load(packaged)
