"""Pack a trained base + adapter into the layout ``Memory.load`` opens: ``base/`` and
``adapter/``, weights stored in half precision to keep the shipped default small.

    python -m r3mem.package BASE_DIR ADAPTER_DIR OUT_DIR [--card RESULTS_DIR --commands FILE
                                     [--base-run DIR_OR_JSON] [--greedy-target FRACTION]
                                     [--earlier-run DIR_OR_JSON ...]]

BASE_DIR may be the name of a pretrained base r3mem knows (``smollm2-135m``): then only the
adapters are packaged. With ``--card``, MODEL_CARD.md is written beside the weights from the
base run (BASE_DIR, or ``--base-run``: its run directory or JSON record; a named base: its
name), the adapter run (ADAPTER_DIR's parent) and the bench results in RESULTS_DIR; with
``--earlier-run`` (repeated, in order), the runs those adapters started from (``init_adapter``):
a run directory, or its JSON record.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from .card import GREEDY_TARGET, model_card
from .checkpoint import (
    CONFIG_NAME,
    PACKAGED_ADAPTER,
    PACKAGED_BASE,
    WEIGHTS_NAME,
    read_adapter_config,
)
from .pretrained import NAMED


def package_model(
    base_dir: str | Path,
    adapter_dir: str | Path,
    out: str | Path,
    dtype: torch.dtype = torch.float16,
    card: Callable[[Path], object] | None = None,
) -> int:
    """Write ``out/base`` and ``out/adapter`` with weights in ``dtype``; returns their bytes.
    A base r3mem knows by name (``smollm2-135m``) is not copied: the adapter names it.
    ``card(folder)`` writes the model card into the new package before it replaces ``out``,
    so a card that fails leaves the previous package whole."""
    out = Path(out)
    meta = read_adapter_config(adapter_dir)
    named = str(base_dir) in NAMED
    if named and meta["base_model"]["name_or_path"] != str(base_dir):
        raise ValueError(f"{adapter_dir}: trained on {meta['base_model']['name_or_path']!r}")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if not named:
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        base.to(dtype).save_pretrained(tmp / PACKAGED_BASE)
        AutoTokenizer.from_pretrained(base_dir).save_pretrained(tmp / PACKAGED_BASE)
        meta["base_model"]["name_or_path"] = PACKAGED_BASE  # the base/ beside it, on load
    weights = load_file(str(Path(adapter_dir) / WEIGHTS_NAME))
    adapter = tmp / PACKAGED_ADAPTER
    adapter.mkdir(parents=True)
    save_file({k: v.to(dtype) for k, v in weights.items()}, str(adapter / WEIGHTS_NAME))
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    (adapter / CONFIG_NAME).write_text(text, encoding="utf-8")
    if card is not None:
        card(tmp)
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_dir")
    parser.add_argument("adapter_dir")
    parser.add_argument("out")
    parser.add_argument("--card", type=Path, help="bench results dir (+ NOTES.md)")
    parser.add_argument("--commands", type=Path, help="the script of commands that made it")
    parser.add_argument("--base-run", type=Path, help="base run dir or JSON record (BASE_DIR)")
    parser.add_argument(
        "--earlier-run",
        type=Path,
        action="append",
        default=[],
        help="a run the adapters started from: its directory or JSON record (repeat, in order)",
    )
    parser.add_argument(
        "--greedy-target",
        type=float,
        default=GREEDY_TARGET,
        help=f"reconstruction target the card judges, in (0, 1] (default {GREEDY_TARGET})",
    )
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.card and not args.commands:
        parser.error("--card needs --commands")
    if not 0 < args.greedy_target <= 1:
        parser.error(f"--greedy-target must be in (0, 1], got {args.greedy_target}")
    card = None
    if args.card:
        name, commands = Path(args.out).name, args.commands.read_text(encoding="utf-8")
        adapter_run = Path(args.adapter_dir).parent
        base_run = args.base_run or args.base_dir

        def card(folder: Path) -> Path:
            return model_card(
                name,
                base_run,
                adapter_run,
                args.card,
                folder,
                commands,
                args.greedy_target,
                args.earlier_run,
            )

    size = package_model(args.base_dir, args.adapter_dir, args.out, card=card)
    print(f"{args.out}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
