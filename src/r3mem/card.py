"""MODEL_CARD.md of a packaged model, written from the runs and benchmarks that made it.

Every figure is read from a file a command wrote (checkpoint state, JSONL metrics, bench
JSON), never typed in, so the card cannot drift from what was measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .bench.plots import training_curve
from .bench.report import hardware, markdown

PPL_TARGET = 0.05  # memory must lower perplexity by at least 5 %
GREEDY_TARGET = 0.90  # greedy token accuracy of paragraph reconstruction at 8x


def _json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (run the command that writes it first)")
    return json.loads(path.read_text(encoding="utf-8"))


def _metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _run(run: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The final checkpoint state (step, elapsed seconds, config) and the metrics rows."""
    return _json(run / "checkpoint" / "state.json"), _metrics(run)


def _verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    met = value >= target if higher_is_better else value <= target
    return "met" if met else "**missed**"


def _notes(results: Path) -> list[str]:
    """``results/NOTES.md``, the reading of the figures by whoever ran them, if written."""
    path = results / "NOTES.md"
    return [path.read_text(encoding="utf-8"), ""] if path.is_file() else []


def model_card(
    name: str, base_run: Path, adapter_run: Path, results: Path, out: Path, commands: str
) -> Path:
    """Write ``out/MODEL_CARD.md`` and ``out/training_curve.png``; returns the card's path.
    ``results`` holds the bench reports (and optionally NOTES.md, copied in as written)."""
    base_state, base_rows = _run(base_run)
    adapter_state, adapter_rows = _run(adapter_run)
    lm, rec = _json(results / "lm.json"), _json(results / "reconstruct.json")
    base_eval = [row for row in base_rows if "valid_ppl" in row][-1]
    base_last, adapter_last = base_rows[-1], adapter_rows[-1]
    curve = training_curve(adapter_run / "metrics.jsonl", out / "training_curve.png")

    ppl = {row["method"]: row for row in lm["results"] if row.get("data") == "validation"}
    if not {"r3mem", "none", "base"} <= ppl.keys():
        raise ValueError(f"{results / 'lm.json'}: needs r3mem, none and base on validation")
    gain = 1 - ppl["r3mem"]["ppl"] / ppl["none"]["ppl"]
    change = f"{abs(gain):.1%} {'lower' if gain >= 0 else 'higher'}"
    (reconstruction,) = [row for row in rec["results"] if row["method"] == "r3mem"]
    base_config, adapter_config = base_state["config"], adapter_state["config"]
    lines = [
        f"# {name}",
        "",
        "The default model of r3mem: a small Llama trained from scratch on the Gutenberg books",
        "train split, with R³Mem adapters (couplings, memory and write tokens, level tags, LoRA)",
        "trained on top of it while it stayed frozen. It exists so that every command runs",
        "offline; it is far too small to be a useful language model.",
        "",
        "## How it was made",
        "",
        "```bash",
        commands.strip(),
        "```",
        "",
        f"- data: `{base_config['train_data']}` (train), "
        f"`{base_config['valid_data']}` (validation)",
        f"- seed: base {base_config['seed']}, adapters {adapter_config['seed']}",
        f"- hardware: {hardware()}",
        f"- base: {base_state['params']:,} parameters, {base_state['step']:,} steps, "
        f"{base_last['tokens']:,} training tokens, {base_state['elapsed'] / 3600:.2f} h, "
        f"{base_last['tokens_per_s']:.0f} tokens/s",
        f"- adapters: {adapter_state['step']:,} steps, {adapter_last['tokens']:,} training tokens, "
        f"{adapter_state['elapsed'] / 3600:.2f} h, {adapter_last['tokens_per_s']:.0f} tokens/s "
        "(`r3mem train` throughput: every token of a window goes through the LM, "
        "reconstruction, entity and cycle passes)",
        "",
        "Base config:",
        "",
        "```json",
        json.dumps(base_config, indent=2),
        "```",
        "",
        "Adapter config:",
        "",
        "```json",
        json.dumps(adapter_config, indent=2),
        "```",
        "",
        "## Figures (books validation split)",
        "",
        f"- base model perplexity at its training length ({base_config['seq_len']} tokens): "
        f"{base_eval['valid_ppl']:.2f}; at segment length, alone: {ppl['base']['ppl']:.2f}",
        f"- recurrent memory vs none, same model, same {ppl['r3mem']['tokens_scored']:,} tokens: "
        f"{ppl['r3mem']['ppl']:.2f} vs {ppl['none']['ppl']:.2f} ({change}; "
        f"target ≥ {PPL_TARGET:.0%}: {_verdict(gain, PPL_TARGET)})",
        f"- paragraph reconstruction at {reconstruction['compression']:g}x, greedy, "
        f"{reconstruction['segments']} segments: token accuracy "
        f"{reconstruction['token_acc']:.1%} (target ≥ {GREEDY_TARGET:.0%}: "
        f"{_verdict(reconstruction['token_acc'], GREEDY_TARGET)}), exact match "
        f"{reconstruction['exact_match']:.1%}, BLEU {reconstruction['bleu']:.1f}",
        "",
        f"![greedy reconstruction against training tokens]({curve.name})",
        "",
        *_notes(results),
        markdown(lm),
        markdown(rec),
    ]
    card = out / "MODEL_CARD.md"
    card.write_text("\n".join(lines), encoding="utf-8")
    return card
