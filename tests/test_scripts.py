"""The pipeline scripts under ``scripts/`` run for hours: a typo in a flag or a config path
must fail here, in seconds, not after the training step."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from r3mem.bench.tasks import METHODS
from r3mem.cli import build_parser
from r3mem.package import build_parser as package_parser
from r3mem.training.base import BaseTrainConfig
from r3mem.training.common import load_config
from r3mem.training.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))


def commands(script: Path, program: tuple[str, ...] = ("r3mem",)) -> list[list[str]]:
    """The arguments of the script's ``program`` command lines, continuations joined, shell
    variables as ``X``."""
    text = script.read_text(encoding="utf-8").replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        words = shlex.split(re.sub(r"\$\{[^}]*\}|\$\w+", "X", line), comments=True)
        if tuple(words[: len(program)]) == program:
            found.append(words[len(program) :])
    return found


def test_there_are_pipeline_scripts():
    assert {"train_default.sh", "train_smollm2.sh"} <= {script.name for script in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_script_parses_and_its_commands_and_configs_are_valid(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    found = commands(script)
    assert any(words[0] == "train" for words in found)
    parser = build_parser()
    for words in found:
        args = parser.parse_args(words)  # exits (SystemExit) on an unknown flag or a bad value
        assert args.command != "bench" or args.task in METHODS, words
    packages = commands(script, ("python", "-m", "r3mem.package"))
    assert packages
    for words in packages:
        package_parser().parse_args(words)
    for config in re.findall(r"configs/[\w./-]+\.toml", script.read_text(encoding="utf-8")):
        kind = BaseTrainConfig if Path(config).name.startswith("base-") else TrainConfig
        load_config(kind, ROOT / config, {})
