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
