"""The README's Python example runs as written, on a tiny local model in place of a hub name."""

import re
from pathlib import Path

from r3mem import R3MemModel
from r3mem.checkpoint import load_base

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(base_dir, tmp_path, monkeypatch, capsys):
    (example,) = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert "path/or/hub-name" in example
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(example.replace("path/or/hub-name", base_dir), "README.md", "exec"), scope)
    # What it printed is the reconstruction of its text by the adapter it saved, loaded back.
    loaded = R3MemModel.from_pretrained(tmp_path / "my-adapter", load_base(base_dir))
    ids = scope["ids"]
    state = loaded.write(loaded.init_memory(1), ids)
    again = loaded.reconstruct(state, max_new_tokens=ids.shape[1])
    assert capsys.readouterr().out == scope["tokenizer"].decode(again[0]) + "\n"


def test_readme_stages_are_the_default_config_s():
    """The README's [[stage]] example quotes configs/r3mem-tiny-books.toml: every value it
    shows is the config's."""
    from r3mem.training.common import tomllib  # tomli before Python 3.11

    (block,) = re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.S)
    shown = tomllib.loads(block)["stage"]
    config = README.with_name("configs") / "r3mem-tiny-books.toml"
    stages = {t["name"]: t for t in tomllib.loads(config.read_text())["stage"]}
    assert [t["name"] for t in shown] == ["autoencode-16", "full"]
    for table in shown:
        assert table == {key: stages[table["name"]].get(key) for key in table}, table["name"]
