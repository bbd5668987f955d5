"""Two writers at once, and a writer killed mid-save, against one version's memory files.

    OMP_NUM_THREADS=1 python benchmarks/writers.py --src /work/main/src --tries 20 \
        --out benchmarks/results --label after

Two loops, each try in its own temp folder, every process ``python -m r3mem.cli ...`` with
PYTHONPATH=SRC and OMP_NUM_THREADS=1:

- two writers: a copy of a memory file (made once by ``remember`` of a ~2 KB text) gets two
  ``remember`` processes started at once (texts A and B, ~1 KB each); afterwards, how many of
  A and B are among the entries' "source" values, and the temporaries left beside the file.
- kill -9: ``remember`` of a ~30 KB text into a copy, killed (SIGKILL) as soon as its temporary
  ``.NAME.*.tmp`` appears (polled every 5 ms); then the temporaries left, a normal
  ``remember``, whether the file opens (``recall``), whether the earlier entries survived and
  the temporaries left after it.

Writes writers_LABEL.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from user_errors import git_revision, meta_of  # benchmarks/ is on sys.path as a script

REPO = Path(__file__).resolve().parent.parent
SAMPLE = "src/r3mem/assets/tale_of_two_cities_ch1-2.txt"
TIMEOUT = 600.0  # seconds one r3mem process may take
POLL = 0.005  # seconds between looks for the temporary
MEMORY_LIMIT = 6 * 2**30  # bytes of address space per subprocess


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def start(src: str, args: list[str], cwd: Path) -> subprocess.Popen:
    """Start ``python -m r3mem.cli ARGS`` with ``src`` on PYTHONPATH."""
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "r3mem.cli", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_limit_memory,
    )


def finish(proc: subprocess.Popen) -> dict[str, Any]:
    """Wait for ``proc``: its exit code and last stderr line (tqdm bars left out)."""
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    text = err.decode("utf-8", "replace")
    lines = [
        line.strip()
        for line in text.split("\n")
        if line.strip() and "\r" not in line and "%|" not in line
    ]
    return {"exit": proc.returncode, "last_line": lines[-1][:160] if lines else ""}


def run(src: str, args: list[str], cwd: Path) -> dict[str, Any]:
    return finish(start(src, args, cwd))


def temps(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.glob(f".{path.name}.*.tmp"))


def recorded_as(source: str) -> str:
    """The text a "source" value names: its file name without .txt (both versions' forms:
    the path as given, or the doc id)."""
    name = Path(source).name
    return name[: -len(".txt")] if name.endswith(".txt") else name


def entry_keys(meta: dict) -> set[tuple[int, int, int]]:
    """(id, checksum, tokens) of each entry: what must survive a later write."""
    return {(e["id"], e["checksum"], e["tokens"]) for e in meta["entries"]}


def make_texts(work: Path) -> None:
    """The texts every try uses, cut from the packaged sample (repeated for the long one)."""
    text = (REPO / SAMPLE).read_text(encoding="utf-8")
    (work / "base.txt").write_text(text[:2000], encoding="utf-8")
    (work / "textA.txt").write_text(text[2000:3000], encoding="utf-8")
    (work / "textB.txt").write_text(text[6000:7000], encoding="utf-8")
    (work / "small.txt").write_text(text[9000:9500], encoding="utf-8")
    (work / "long.txt").write_text((text * 2)[:30000], encoding="utf-8")


def try_folder(work: Path, name: str, base: Path) -> Path:
    """A fresh folder with the texts and a copy of the base memory file as ``mem.r3mem``."""
    folder = work / name
    folder.mkdir()
    for text in work.glob("*.txt"):
        shutil.copy(text, folder / text.name)
    shutil.copy(base, folder / "mem.r3mem")
    return folder


def two_writers(src: str, work: Path, base: Path, index: int) -> dict[str, Any]:
    """Two ``remember`` processes into one file at once; texts lost and temps left."""
    folder = try_folder(work, f"two{index:02d}", base)
    memory = folder / "mem.r3mem"
    begin = time.monotonic()
    procs = [
        start(src, ["remember", name, "--memory", "mem.r3mem"], folder)
        for name in ("textA.txt", "textB.txt")
    ]
    results = [finish(proc) for proc in procs]
    meta = meta_of(memory)
    found = (
        set()
        if meta is None
        else {recorded_as(str(e["meta"].get("source"))) for e in meta["entries"]}
    )
    lost = [name for name in ("textA", "textB") if name not in found]
    record = {
        "try": index,
        "exit_a": results[0]["exit"],
        "exit_b": results[1]["exit"],
        "lost": lost,
        "texts_lost": len(lost),
        "file_opens": meta is not None,
        "entries": None if meta is None else len(meta["entries"]),
        "temps_left": temps(memory),
        "seconds": round(time.monotonic() - begin, 1),
    }
    for key, result in zip(("a", "b"), results, strict=True):
        if result["exit"] != 0:
            record[f"stderr_{key}"] = result["last_line"]
    shutil.rmtree(folder)
    return record


def kill_mid_save(
    src: str, work: Path, base: Path, index: int, poll: float = POLL
) -> dict[str, Any]:
    """``remember`` killed by SIGKILL once its temporary appears, then a normal one."""
    folder = try_folder(work, f"kill{index:02d}", base)
    memory = folder / "mem.r3mem"
    kept = entry_keys(meta_of(memory) or {"entries": []})
    proc = start(src, ["remember", "long.txt", "--memory", "mem.r3mem"], folder)
    begin, killed_at, seen = time.monotonic(), None, None
    while proc.poll() is None:
        found = temps(memory)
        if found:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at, seen = time.monotonic() - begin, found
            break
        time.sleep(poll)
    killed_run = finish(proc)
    left_at_once = temps(memory)
    meta = meta_of(memory)
    after_kill = None if meta is None else len(meta["entries"])
    normal = run(src, ["remember", "small.txt", "--memory", "mem.r3mem"], folder)
    recall = run(src, ["recall", "the", "--memory", "mem.r3mem"], folder)
    meta = meta_of(memory)
    record = {
        "try": index,
        "killed_mid_save": killed_at is not None,
        "killed_after_s": None if killed_at is None else round(killed_at, 2),
        "temp_seen": seen,
        "killed_exit": killed_run["exit"],
        "temps_left_at_once": left_at_once,
        "entries_after_kill": after_kill,
        "next_exit": normal["exit"],
        "opens": recall["exit"] == 0,
        "old_entries_kept": meta is not None and kept <= entry_keys(meta),
        "entries_final": None if meta is None else len(meta["entries"]),
        "temps_left_after": temps(memory),
    }
    if normal["exit"] != 0:
        record["next_stderr"] = normal["last_line"]
    if recall["exit"] != 0:
        record["recall_stderr"] = recall["last_line"]
    if killed_at is None:
        record["note"] = "not killed mid-save"
    shutil.rmtree(folder)
    return record


def markdown(report: dict[str, Any]) -> str:
    two, kill = report["two_writers"], report["kill"]
    rows = [
        f"# Writers: {report['label']}",
        "",
        f"- source: `{report['src']}` at {report['rev']}",
        f"- command: `{report['command']}`",
        f"- base memory file: remember of a 2,000-character text; sources recorded as "
        f"{report['source_recorded']!r} for base.txt",
    ]
    if two:
        rows += two_table(two)
    if kill:
        rows += kill_table(kill, report["poll_s"])
    return "\n".join(rows) + "\n"


def two_table(two: list[dict[str, Any]]) -> list[str]:
    """The two-writers section: a summary line and one row per try."""
    rows = [
        "",
        "## Two writers at once (texts A and B, ~1 KB each, into one copy)",
        "",
        f"Texts lost: {sum(r['texts_lost'] for r in two)} of {2 * len(two)} (target 0); "
        f"tries with temps left: {sum(bool(r['temps_left']) for r in two)}; "
        f"tries with a nonzero exit: {sum(r['exit_a'] != 0 or r['exit_b'] != 0 for r in two)}.",
        "",
        "| try | exit A | exit B | texts lost | entries after | temps left | s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in two:
        lost = f"{r['texts_lost']} {r['lost']}" if r["lost"] else "0"
        rows.append(
            f"| {r['try']} | {r['exit_a']} | {r['exit_b']} | {lost} | {r['entries']} "
            f"| {len(r['temps_left'])} | {r['seconds']} |"
        )
    return rows


def kill_table(kill: list[dict[str, Any]], poll: float) -> list[str]:
    """The kill -9 section: a summary line and one row per try."""
    killed = [r for r in kill if r["killed_mid_save"]]
    rows = [
        "",
        f"## kill -9 mid-save (remember of ~30 KB, killed when its temp appears; "
        f"polled every {poll * 1000:g} ms)",
        "",
        f"Killed mid-save: {len(killed)} of {len(kill)}; temps left after the next remember: "
        f"{sum(len(r['temps_left_after']) for r in kill)} (target 0); next remember failed: "
        f"{sum(r['next_exit'] != 0 for r in kill)}; file did not open: "
        f"{sum(not r['opens'] for r in kill)}; old entries lost: "
        f"{sum(not r['old_entries_kept'] for r in kill)}.",
        "",
        "| try | killed mid-save (s) | temps left at once | next remember exit | opens "
        "| old entries kept | temps left after |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in kill:
        when = f"yes ({r['killed_after_s']})" if r["killed_mid_save"] else "not killed mid-save"
        rows.append(
            f"| {r['try']} | {when} | {len(r['temps_left_at_once'])} | {r['next_exit']} "
            f"| {'yes' if r['opens'] else 'no'} | {'yes' if r['old_entries_kept'] else 'no'} "
            f"| {len(r['temps_left_after'])} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", required=True, help="src/ of the version to run")
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results", help="output folder")
    parser.add_argument("--label", help="names the outputs (default: the source's revision)")
    parser.add_argument("--poll", type=float, default=POLL, help="seconds between looks")
    parser.add_argument("--loops", default="two,kill", help="which loops: two, kill or both")
    args = parser.parse_args()
    src = str(Path(args.src).resolve())
    rev = git_revision(src)
    label = args.label or rev.split()[0]
    work = Path(tempfile.mkdtemp(prefix=f"r3mem-writers-{label}-"))
    make_texts(work)
    made = run(src, ["remember", "base.txt", "--memory", "base.r3mem"], work)
    base = work / "base.r3mem"
    meta = meta_of(base)
    if made["exit"] != 0 or meta is None:
        raise SystemExit(f"remember of the base text failed: {made['last_line']}")
    report: dict[str, Any] = {
        "label": label,
        "src": src,
        "rev": rev,
        "command": " ".join(["python", *sys.argv]),
        "poll_s": args.poll,
        "source_recorded": sorted({str(e["meta"].get("source")) for e in meta["entries"]}),
        "two_writers": [],
        "kill": [],
    }
    loops = args.loops.split(",")
    for index in range(args.tries if "two" in loops else 0):
        report["two_writers"].append(two_writers(src, work, base, index))
        print(f"two writers {index}: {report['two_writers'][-1]}", flush=True)
    for index in range(args.tries if "kill" in loops else 0):
        report["kill"].append(kill_mid_save(src, work, base, index, args.poll))
        print(f"kill {index}: {report['kill'][-1]}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"writers_{label}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"writers_{label}.md").write_text(markdown(report))
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out / f'writers_{label}.json'} and {out / f'writers_{label}.md'}")


if __name__ == "__main__":
    main()
