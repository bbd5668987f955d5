"""The README is executable truth: its Python runs as written (a tiny local model in place of
a hub name), its shell commands parse, and what needs a trained model says how to make it."""

import re
import shlex
from pathlib import Path

import pytest

from r3mem import Memory, R3MemModel
from r3mem.checkpoint import load_base
from r3mem.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_every_block_is_tagged_and_checked():
    fences = re.findall(r"^```(\w*)$", README.read_text(), flags=re.M)
    languages = fences[::2]  # opening fences
    assert set(languages) == {"bash", "python", "toml"}, languages


def test_readme_example_runs(base_dir, tmp_path, monkeypatch, capsys):
    example = blocks("python")[0]
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
    # from_base took the base over: wrapping it again is refused, as the README says.
    with pytest.raises(ValueError, match="wrapped already"):
        R3MemModel.from_pretrained(tmp_path / "my-adapter", base_model=scope["base"])


def test_readme_memory_example_runs_on_the_shipped_model(tmp_path, monkeypatch, capsys):
    example = blocks("python")[1]
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    score, text = capsys.readouterr().out.split(" ", 1)
    remembered = re.search(r'remember\(.*?\n\s*(".*?")\n\s*(".*?")\n', example, flags=re.S)
    # two paragraphs over one entry's 32 tokens: two entries, the Dover one found, as stored
    assert text.strip() == eval(remembered[1]).strip()
    assert float(score) > 0
    assert len(Memory.open(tmp_path / "notes.r3mem").bank) == 2


def test_readme_shell_commands_parse():
    """Every r3mem command shown parses with the real parser; a block that needs a trained
    model or a folder of one's own says so in a '# needs:' line."""
    parser = build_parser()
    for block in blocks("bash"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["r3mem"]:
                parser.parse_args(words[1:])
        if re.search(r"\bruns/|\bDIR\b", block.replace("r3mem train", "")):
            assert "# needs:" in block, block


def test_readme_stages_are_the_default_config_s():
    """The README's [[stage]] example quotes configs/r3mem-tiny-books.toml: every value it
    shows is the config's."""
    from r3mem.training.common import tomllib  # tomli before Python 3.11

    (block,) = blocks("toml")
    shown = tomllib.loads(block)["stage"]
    config = README.with_name("configs") / "r3mem-tiny-books.toml"
    stages = {t["name"]: t for t in tomllib.loads(config.read_text())["stage"]}
    assert [t["name"] for t in shown] == ["autoencode-16", "distill"]
    for table in shown:
        assert table == {key: stages[table["name"]].get(key) for key in table}, table["name"]
