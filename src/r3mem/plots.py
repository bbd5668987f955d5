"""Curves people would rather see than read, saved as PNG beside their tables."""

from __future__ import annotations

import json
import re
from itertools import pairwise
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt


def training_curve(metrics: str | Path, png: str | Path) -> Path:
    """Greedy reconstruction accuracy (and exact match) against training tokens, from the
    evaluation rows of an ``r3mem train`` metrics log: at the model's segment length, and at
    a stage's own shorter length while the curriculum reads shorter segments; a dotted line
    where each stage begins."""
    rows = [json.loads(line) for line in Path(metrics).read_text(encoding="utf-8").splitlines()]
    evals = [row for row in rows if "rec_token_acc" in row]
    if not evals:
        raise ValueError(f"{metrics}: no evaluation rows (rec_token_acc) to plot")
    figure, axis = plt.subplots(figsize=(7, 3.8))
    tokens = [row["tokens"] for row in evals]
    axis.plot(
        tokens, [r["rec_token_acc"] for r in evals], marker="o", label="greedy token accuracy"
    )
    axis.plot(tokens, [r["rec_exact"] for r in evals], marker=".", label="exact match")
    short = [row for row in evals if "rec_stage_token_acc" in row]
    if short:
        axis.plot(
            [r["tokens"] for r in short],
            [r["rec_stage_token_acc"] for r in short],
            marker="x",
            linestyle=":",
            label="greedy, at the stage's shorter length",
        )
    for previous, row in pairwise(rows):
        if row.get("stage") != previous.get("stage"):
            axis.axvline(previous["tokens"], color="grey", linestyle=":", linewidth=0.8)
            axis.text(previous["tokens"], 1.01, row["stage"], fontsize=6, rotation=30)
    axis.axhline(0.9, color="grey", linestyle="--", linewidth=0.8, label="target 0.90")
    axis.set_xlabel("training tokens")
    axis.set_ylabel("paragraph reconstruction")
    axis.set_ylim(0, 1)
    axis.legend(loc="lower right", fontsize=7)
    figure.tight_layout()
    figure.savefig(png, dpi=120)
    plt.close(figure)
    return Path(png)


def position_curve(curves: dict[str, list[tuple[int, float]]], png: str | Path) -> Path:
    """Perplexity by position in the book (segment index, log scale), one line per method;
    beside it, each method's perplexity over ``none``'s (below 1: its memory helps there)."""
    relative = "none" in curves
    figure, axes = plt.subplots(1, 2 if relative else 1, figsize=(11 if relative else 7, 4))
    axes = list(axes) if relative else [axes]
    colors = plt.get_cmap("tab20")
    for index, (method, points) in enumerate(curves.items()):
        style = dict(color=colors(index % 20), marker="os^D"[index // 20 % 4], label=method)
        axes[0].plot([p for p, _ in points], [v for _, v in points], **style)
        if relative:
            none = dict(curves["none"])
            ratio = [(p, v / none[p]) for p, v in points if p in none]
            axes[1].plot([p for p, _ in ratio], [v for _, v in ratio], **style)
    axes[0].set_ylabel("perplexity")
    if relative:
        axes[1].axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
        axes[1].set_ylabel("perplexity / none's")
    for axis in axes:
        axis.set_xscale("log")
        axis.set_xlabel("segment index in the book (bucket start)")
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    figure.tight_layout()
    figure.savefig(png, dpi=120)
    plt.close(figure)
    return Path(png)


def ratio_curve(rows: list[dict], png: str | Path) -> Path:
    """Greedy reconstruction (token accuracy, BLEU) against compression ratio, one line per
    method family: methods named ``NAME-mN`` are NAME at m = N memory tokens."""
    families: dict[str, list[dict]] = {}
    for row in rows:
        families.setdefault(re.sub(r"-m\d+$", "", row["method"]), []).append(row)
    figure, (accuracy, bleu) = plt.subplots(1, 2, figsize=(9, 3.5))
    for family, points in families.items():
        points = sorted(points, key=lambda row: row["compression"])
        ratios = [row["compression"] for row in points]
        accuracy.plot(ratios, [row["token_acc"] for row in points], marker="o", label=family)
        bleu.plot(ratios, [row["bleu"] for row in points], marker="o", label=family)
    ticks = sorted({row["compression"] for row in rows})
    for axis, label in ((accuracy, "greedy token accuracy"), (bleu, "BLEU")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
        axis.set_xlabel("compression (segment tokens / memory tokens)")
        axis.set_ylabel(label)
    accuracy.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(png, dpi=120)
    plt.close(figure)
    return Path(png)


def history_curve(rows: list[dict], png: str | Path) -> Path:
    """Seconds per token against history length (log-log), one line per method."""
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for method in dict.fromkeys(row["method"] for row in rows):
        points = [(r["history_tokens"], r["s_per_token"]) for r in rows if r["method"] == method]
        axis.plot([h for h, _ in points], [t for _, t in points], marker="o", label=method)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("history tokens")
    axis.set_ylabel("seconds per token of one more segment")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(png, dpi=120)
    plt.close(figure)
    return Path(png)
