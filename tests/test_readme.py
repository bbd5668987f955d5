"""The README's Python example runs as written, on a tiny local model in place of a hub name."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(base_dir, tmp_path, monkeypatch, capsys):
    (example,) = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert "path/or/hub-name" in example
    monkeypatch.chdir(tmp_path)
    exec(compile(example.replace("path/or/hub-name", base_dir), "README.md", "exec"), {})
    assert (tmp_path / "my-adapter" / "adapter_model.safetensors").is_file()
    assert capsys.readouterr().out.strip()


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
