"""Every benchmark writes ``TASK.json`` (figures with command, seed, git revision, hardware)
and ``TASK.md`` (the same as a Markdown table)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch


def git_revision(results: str | Path | None = None) -> str:
    """The checkout's short revision, with ``+dirty`` when a tracked file has uncommitted
    changes; files under ``results`` and the checkout's ``benchmarks/results`` do not count
    (reports and notes written beside a run change no code)."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    changed = [Path(top, line[3:].split(" -> ")[-1]).resolve() for line in status]
    reports = [Path(top, "benchmarks", "results").resolve()]
    reports += [] if results is None else [Path(results).resolve()]
    code = [path for path in changed if not any(path.is_relative_to(r) for r in reports)]
    return rev + ("+dirty" if code else "")


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU {platform.machine()} x{os.cpu_count()}, torch {torch.__version__}"


# Libraries whose version moves figures without a change of ours (BM25 on NQ moved 0.95 ->
# 0.94 with a new bm25s in a rebuilt venv, the version unrecorded).
PACKAGES = ("transformers", "tokenizers", "bm25s", "numpy")


def packages() -> dict[str, str]:
    """The versions of :data:`PACKAGES` here ("absent" for one not installed)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


def write_report(
    out: str | Path,
    task: str,
    seed: int,
    results: list[dict[str, Any]],
    notes: str = "",
    git_rev: str | None = None,
) -> dict[str, Any]:
    """Write ``out/TASK.json`` and ``out/TASK.md``; returns the JSON object. ``git_rev``: the
    revisions the results come from, when not only the checkout's (a resumed run's)."""
    report = {
        "task": task,
        "git_rev": git_revision(out) if git_rev is None else git_rev,
        "seed": seed,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "hardware": hardware(),
        "packages": packages(),
        "results": results,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{task}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / f"{task}.md").write_text(markdown(report, notes), encoding="utf-8")
    return report


def markdown(report: dict[str, Any], notes: str = "") -> str:
    columns = list(dict.fromkeys(key for row in report["results"] for key in row))
    lines = [
        f"### {report['task']}",
        "",
        f"`{report['command']}` — seed {report['seed']}, rev {report['git_rev']}, "
        f"{report['hardware']}"
        + "".join(f", {name} {v}" for name, v in report.get("packages", {}).items()),
        "",
        "| " + " | ".join(columns) + " |",
        "|" + " --- |" * len(columns),
    ]
    for row in report["results"]:
        lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    if notes:
        lines += ["", notes]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
