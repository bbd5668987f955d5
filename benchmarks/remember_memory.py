"""Peak memory and speed of ``r3mem remember`` against the length of the text.

    python benchmarks/remember_memory.py --sizes 100000,1000000,10000000 [--src SRC] [--label L]

Cuts texts of each size (in UTF-8 bytes, at a blank line) from the books under ``--data``,
runs ``python -m r3mem.cli remember TEXT --memory FILE`` in a fresh process per size with
``PYTHONPATH=SRC`` (so the code of another checkout can be measured the same way) and the
shipped default model, and reads its peak resident memory from GNU time. The entries a
memory keeps grow with the text by design; what ``remember`` needs beside them is the peak
minus the memory file's size. Writes ``remember_memory_LABEL.{json,md}`` under ``--out``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from r3mem.report import write_report  # noqa: E402


def corpus(data: Path, size: int) -> str:
    """At least ``size`` bytes of book text (the books in order, repeated if need be), cut at
    the last blank line before ``size`` bytes."""
    books = sorted(data.rglob("*.txt.gz"))
    if not books:
        raise SystemExit(f"{data}: no .txt.gz books")
    text = ""
    while len(text.encode()) < size:
        for book in books:
            with gzip.open(book, "rt", encoding="utf-8") as file:
                text += file.read() + "\n\n"
            if len(text.encode()) >= size:
                break
    cut = text.encode()[:size].decode("utf-8", errors="ignore")
    return cut[: cut.rfind("\n\n")] if "\n\n" in cut else cut


def measure(src: Path, text: str, workdir: Path) -> dict[str, float]:
    """One ``remember`` of ``text`` into a new memory file, in a fresh process."""
    path, memory = workdir / "text.txt", workdir / "memory.r3mem"
    path.write_text(text, encoding="utf-8")
    memory.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    command = ["/usr/bin/time", "-f", "peak_kb=%M", sys.executable, "-m", "r3mem.cli"]
    command += ["remember", str(path), "--memory", str(memory)]
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir)
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"remember failed ({run.returncode}): {run.stderr[-2000:]}")
    tokens = int(re.search(r"\((?:\d+ texts, )?(\d+) tokens\)", run.stdout)[1])
    peak = int(re.search(r"peak_kb=(\d+)", run.stderr)[1]) / 1024
    stored = memory.stat().st_size / 2**20
    return {
        "text_bytes": len(text.encode()),
        "tokens": tokens,
        "seconds": round(seconds, 1),
        "tokens_per_s": round(tokens / seconds, 1),
        "peak_rss_mb": round(peak, 1),
        "memory_file_mb": round(stored, 1),
        "peak_minus_file_mb": round(peak - stored, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--src", default=str(ROOT / "src"), help="the r3mem source to measure")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "books"))
    parser.add_argument("--label", default="after")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for size in map(int, args.sizes.split(",")):
            row = {
                "size": size,
                **measure(Path(args.src), corpus(Path(args.data), size), Path(workdir)),
            }
            print(row, flush=True)
            rows.append(row)
    measured = subprocess.run(
        ["git", "-C", args.src, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    notes = (
        f"Code measured: {args.src} at {measured}; one thread; the shipped default model. "
        "peak_minus_file_mb: what remember needs beside the entries it keeps."
    )
    write_report(args.out, f"remember_memory_{args.label}", 0, rows, notes)


if __name__ == "__main__":
    main()
