"""How two versions of the ``r3mem`` CLI answer user errors and crafted memory files.

    OMP_NUM_THREADS=1 python benchmarks/user_errors.py --before-src /work/runs/before/src \
        --after-src /work/main/src --out benchmarks/results

Each case runs as a real subprocess (``python -m r3mem.cli ...`` with PYTHONPATH set to the
version's source, in a temp work dir, 60 s timeout, under a 6 GiB address-space limit so a
crafted file cannot exhaust the machine's memory), once per version, one process at a time.
Memory-file fixtures are written by each version's own ``remember`` and then crafted by
editing the safetensors metadata ("r3mem" key) or tensors. Writes user_errors.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save_file

TIMEOUT = 60.0
MEMORY_LIMIT = 6 * 2**30  # bytes of address space per subprocess
REPO = Path(__file__).resolve().parent.parent
SAMPLE = "src/r3mem/assets/tale_of_two_cities_ch1-2.txt"
APPROXIMATE = "<approximate>"  # a case's argv: recall's flag to read approximately, if any

Arg = str | bytes


@dataclass
class Case:
    """One command to run in both versions; ``memory`` names the file whose hash is tracked."""

    key: str
    title: str
    argv: list[Arg]
    stdin: str | None = None
    memory: str | None = None
    measure: Callable[[Path], dict[str, Any]] | None = None
    config_check: str | None = None  # a train-base TOML: check load_config first


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_cli(src: str, argv: list[Arg], cwd: Path, stdin: str | None = None) -> dict[str, Any]:
    """Run ``python -m r3mem.cli ARGV`` with ``src`` on PYTHONPATH; exit code, output, time."""
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1")
    return run_python(["-m", "r3mem.cli", *argv], env, cwd, stdin)


def run_python(args: list[Arg], env: dict[str, str], cwd: Path, stdin: str | None) -> dict:
    """Run the interpreter with ``args``; kills the process group after TIMEOUT seconds."""
    stdin_file = open(stdin, "rb") if stdin else subprocess.DEVNULL  # noqa: SIM115
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        stdin=stdin_file,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_limit_memory,
    )
    killed = False
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        killed = True
    finally:
        if stdin:
            stdin_file.close()
    return {
        "exit": proc.returncode,
        "killed": killed,
        "seconds": round(time.monotonic() - start, 2),
        "stdout": out.decode("utf-8", "replace"),
        "stderr": err.decode("utf-8", "replace"),
    }


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """The measures of one run's stderr: lines (tqdm bars left out), traceback, warnings."""
    stderr = result["stderr"]
    lines = [
        line.strip()
        for line in stderr.split("\n")
        if line.strip() and "\r" not in line and "%|" not in line
    ]
    last = lines[-1] if lines else ""
    if not last:
        out = [line.strip() for line in result["stdout"].split("\n") if line.strip()]
        last = f"(stdout) {out[-1]}" if out else ""
    hits = re.findall(r"^\[[-0-9.]+\] #(\d+)", result["stdout"], re.MULTILINE)
    out = [line.strip() for line in result["stdout"].split("\n") if line.strip()]
    return {
        "exit": result["exit"],
        "killed": result["killed"],
        "hits": [int(hit) for hit in hits],
        "stdout_first": out[0][:100] if out and not hits else "",
        "seconds": result["seconds"],
        "stderr_lines": len(lines),
        "traceback": "Traceback" in stderr,
        "last_line": last[:160],
        "warnings": stderr.count("Warning"),
        "stderr_tail": stderr[-3000:],
        "stdout_tail": result["stdout"][-1000:],
    }


def sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def read_parts(path: Path) -> tuple[dict, dict]:
    """The tensors and the "r3mem" metadata of a memory file."""
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["r3mem"])
    return load_file(str(path)), meta


def write_parts(path: Path, tensors: dict, meta: dict) -> None:
    save_file(tensors, str(path), metadata={"r3mem": json.dumps(meta)})


def meta_of(path: Path) -> dict | None:
    """The metadata of a memory file, or None when it cannot be read."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return json.loads(handle.metadata()["r3mem"])
    except Exception:
        return None


def entry_count(path: Path) -> int | None:
    meta = meta_of(path)
    return None if meta is None else len(meta["entries"])


def sources(path: Path) -> list[str] | None:
    """Distinct "source" values of the entries' meta, sorted."""
    meta = meta_of(path)
    if meta is None:
        return None
    return sorted({str(e["meta"].get("source")) for e in meta["entries"]})


def temps(path: Path) -> int:
    return len(list(path.parent.glob(f".{path.name}.*.tmp"))) if path.parent.is_dir() else 0


def craft(source: Path, target: Path, change: Callable[[dict, dict], None]) -> None:
    """A copy of ``source`` with its tensors and metadata changed by ``change``."""
    tensors, meta = read_parts(source)
    change(tensors, meta)
    write_parts(target, tensors, meta)


def _bad_checksums(tensors: dict, meta: dict) -> None:
    for entry in meta["entries"]:
        entry["checksum"] = (entry["checksum"] + 1) % 2**32


def _huge_tokens(tensors: dict, meta: dict) -> None:
    meta["entries"][0]["tokens"] = 10**9


def _drop_slot(tensors: dict, meta: dict) -> None:
    tensors["entries"] = tensors["entries"][:, :-1].contiguous()


def _next_id_zero(tensors: dict, meta: dict) -> None:
    meta["next_id"] = 0


def _duplicate_id(tensors: dict, meta: dict) -> None:
    meta["entries"][1]["id"] = meta["entries"][0]["id"]


def toml_with(text: str, values: dict[str, str], drop_table: str | None = None) -> str:
    """``text`` with top-level ``key = value`` lines replaced (or added at the top) and one
    ``[table]`` removed up to the next table."""
    out: list[str] = []
    skipping = in_table = False
    done: set[str] = set()
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith("["):
            in_table = True
            skipping = drop_table is not None and stripped == f"[{drop_table}]"
        if skipping:
            continue
        key = stripped.split("=", 1)[0].strip() if "=" in stripped else None
        top = not in_table and not stripped.startswith("#")
        if top and key in values and key not in done:
            out.append(f"{key} = {values[key]}")
            done.add(key)
        else:
            out.append(line)
    head = [f"{key} = {value}" for key, value in values.items() if key not in done]
    return "\n".join(head + out)


def make_fixtures(work: Path, src: str, log: dict[str, Any]) -> Path:
    """Texts, folders, configs and memory files in ``work``; returns the pristine memory M."""
    text = (REPO / SAMPLE).read_text(encoding="utf-8")
    (work / "sample.txt").write_text(text[:3000], encoding="utf-8")
    (work / "small.txt").write_text(text[3000:3500], encoding="utf-8")
    (work / "nul.txt").write_text(text[3500:3700] + "\x00\x00" + text[3700:3900])
    (work / "twodir").mkdir()
    (work / "twodir" / "a.txt").write_text(text[4000:5000], encoding="utf-8")
    (work / "twodir" / "b.txt").write_text(text[5000:6000], encoding="utf-8")
    (work / "adir").mkdir()
    (work / "junk.r3mem").write_bytes(random.Random(0).randbytes(4096))

    made = run_cli(src, ["remember", "sample.txt", "--memory", "M.r3mem"], work)
    log["fixture_remember"] = summarize(made)
    memory = work / "M.r3mem"
    if made["exit"] != 0 or not memory.is_file():
        raise SystemExit(f"{src}: remember of the fixture failed:\n{made['stderr']}")
    for name in ("binary", "nul", "empty", "query", "missingdir"):
        shutil.copy(memory, work / f"{name}.r3mem")
    craft(memory, work / "bad.r3mem", _bad_checksums)
    craft(memory, work / "huge.r3mem", _huge_tokens)
    craft(memory, work / "huge_exact.r3mem", _huge_tokens)
    craft(memory, work / "huge_all.r3mem", _huge_tokens)
    craft(memory, work / "huge_all_exact.r3mem", _huge_tokens)
    craft(memory, work / "shape.r3mem", _drop_slot)
    craft(memory, work / "nextid.r3mem", _next_id_zero)
    craft(memory, work / "dupid.r3mem", _duplicate_id)
    shutil.copy(memory, work / "perm.r3mem")
    os.chmod(work / "perm.r3mem", 0o640)

    data = "/work/shared/data/books"
    r3mem = (REPO / "configs/r3mem-tiny-books.toml").read_text(encoding="utf-8")
    common = {
        "train_data": f'"{data}/train"',
        "valid_data": f'"{data}/validation"',
        "out_dir": f'"{work / "train_out"}"',
        "cache_dir": f'"{work / "cache"}"',
    }
    (work / "bad.toml").write_text(toml_with(r3mem, {**common, "r3mem": "5"}, "r3mem"))
    missing = {**common, "base_model": '"runs/nothing"'}
    (work / "missingbase.toml").write_text(toml_with(r3mem, missing))
    base = (REPO / "configs/base-tiny-books.toml").read_text(encoding="utf-8")
    base_common = {**common, "out_dir": f'"{work / "base_out"}"', "steps": "1"}
    for name, key, value in (
        ("minlr", "min_lr_ratio", "-3"),
        ("wd", "weight_decay", "-1"),
        ("bs", "batch_size", "2.5"),
    ):
        (work / f"base_{name}.toml").write_text(toml_with(base, {**base_common, key: value}))

    shipped = Path(src) / "r3mem" / "assets" / "r3mem-tiny-books"
    for name, section, key in (
        ("model_novocab", "base_model", "vocab_size"),
        ("model_noform", "r3mem_config", "memory_form"),
    ):
        shutil.copytree(shipped, work / name)
        config_path = work / name / "adapter" / "adapter_config.json"
        config = json.loads(config_path.read_text())
        del config[section][key]
        config_path.write_text(json.dumps(config, indent=2))
    return memory


def _entries_measure(name: str) -> Callable[[Path], dict[str, Any]]:
    def measure(work: Path) -> dict[str, Any]:
        return {"entries": entry_count(work / name)}

    return measure


def _sources_measure(work: Path) -> dict[str, Any]:
    found = sources(work / "two.r3mem")
    return {"sources": found, "distinct_sources": None if found is None else len(found)}


def _mode_measure(work: Path) -> dict[str, Any]:
    path = work / "perm.r3mem"
    return {"mode": oct(path.stat().st_mode & 0o777) if path.exists() else None}


def cases() -> list[Case]:
    rec = ["recall", "the", "--memory"]
    # fmt: off
    return [
        Case("binary_stdin", "binary bytes on stdin (/bin/ls)",
             ["remember", "-", "--memory", "binary.r3mem"], "/bin/ls", "binary.r3mem"),
        Case("nul_file", "UTF-8 text with NUL bytes as a file",
             ["remember", "nul.txt", "--memory", "nul.r3mem"], None, "nul.r3mem"),
        Case("empty_stdin", "empty stdin (/dev/null)",
             ["remember", "-", "--memory", "empty.r3mem"], "/dev/null", "empty.r3mem"),
        Case("non_utf8_query", "non-UTF-8 query (argv byte 0xff 0xfe)",
             ["recall", b"\xff\xfe", "--memory", "query.r3mem"], None, "query.r3mem"),
        Case("memory_in_missing_folder", "--memory in a missing folder",
             ["remember", "sample.txt", "--memory", "nodir/x.r3mem"], None, "nodir/x.r3mem"),
        Case("memory_is_folder", "--memory pointing at a folder",
             ["remember", "sample.txt", "--memory", "adir"], None, None),
        Case("bad_checksum_exact", "bad checksums, recall --exact -k 3",
             [*rec, "bad.r3mem", "--exact", "-k", "3"], None, "bad.r3mem"),
        Case("huge_tokens", "entry 0 tokens = 10**9, recall approximately",
             [*rec, "huge.r3mem", APPROXIMATE], None, "huge.r3mem"),
        Case("huge_tokens_exact", "entry 0 tokens = 10**9, recall --exact",
             [*rec, "huge_exact.r3mem", "--exact"], None, "huge_exact.r3mem"),
        Case("huge_tokens_all", "entry 0 tokens = 10**9, recall approximately -k 16 (#0 too)",
             [*rec, "huge_all.r3mem", APPROXIMATE, "-k", "16"], None, "huge_all.r3mem"),
        Case("huge_tokens_all_exact", "entry 0 tokens = 10**9, recall --exact -k 16",
             [*rec, "huge_all_exact.r3mem", "--exact", "-k", "16"], None,
             "huge_all_exact.r3mem"),
        Case("entries_wrong_shape", "entries tensor without its last slot, recall",
             [*rec, "shape.r3mem"], None, "shape.r3mem"),
        Case("next_id_zero", "next_id = 0, remember small.txt",
             ["remember", "small.txt", "--memory", "nextid.r3mem"], None, "nextid.r3mem",
             _entries_measure("nextid.r3mem")),
        Case("duplicate_id", "entry 1 id = entry 0 id, remember small.txt",
             ["remember", "small.txt", "--memory", "dupid.r3mem"], None, "dupid.r3mem",
             _entries_measure("dupid.r3mem")),
        Case("junk_file", "random bytes as the memory file, recall",
             [*rec, "junk.r3mem"], None, "junk.r3mem"),
        Case("missing_file", "recall on a missing memory file",
             [*rec, "missing.r3mem"], None, "missing.r3mem"),
        Case("folder_of_two", "remember a folder of two .txt files (target: 2 sources)",
             ["remember", "twodir", "--memory", "two.r3mem"], None, "two.r3mem",
             _sources_measure),
        Case("train_r3mem_5", "train TOML with top-level r3mem = 5",
             ["train", "--config", "bad.toml"]),
        Case("base_min_lr_ratio", "train-base TOML min_lr_ratio = -3",
             ["train-base", "--config", "base_minlr.toml", "--stop-after", "0"],
             config_check="base_minlr.toml"),
        Case("base_weight_decay", "train-base TOML weight_decay = -1",
             ["train-base", "--config", "base_wd.toml", "--stop-after", "0"],
             config_check="base_wd.toml"),
        Case("base_batch_size", "train-base TOML batch_size = 2.5",
             ["train-base", "--config", "base_bs.toml", "--stop-after", "0"],
             config_check="base_bs.toml"),
        Case("missing_base_model", 'train TOML base_model = "runs/nothing"',
             ["train", "--config", "missingbase.toml"]),
        Case("adapter_no_vocab_size", "adapter config without base_model.vocab_size",
             ["remember", "small.txt", "--memory", "new.r3mem", "--model", "model_novocab"],
             None, "new.r3mem"),
        Case("adapter_no_memory_form", "adapter config without r3mem_config.memory_form",
             ["remember", "small.txt", "--memory", "new2.r3mem", "--model", "model_noform"],
             None, "new2.r3mem"),
        Case("normal_remember", "normal remember small.txt (target: 0 Warning)",
             ["remember", "small.txt", "--memory", "fresh.r3mem"], None, "fresh.r3mem"),
        Case("normal_recall", "normal recall the (target: 0 Warning)",
             [*rec, "fresh.r3mem"], None, "fresh.r3mem"),
        Case("permissions", "remember into a chmod 640 copy (target: mode 0o640)",
             ["remember", "small.txt", "--memory", "perm.r3mem"], None, "perm.r3mem",
             _mode_measure),
    ]
    # fmt: on


def check_config(src: str, work: Path, toml: str) -> dict[str, Any]:
    """Load a train-base TOML with the version's load_config and BaseTrainConfig."""
    code = (
        "import sys\n"
        "from r3mem.training.base import BaseTrainConfig\n"
        "from r3mem.training.common import load_config\n"
        "try:\n"
        f"    load_config(BaseTrainConfig, {toml!r}, {{}})\n"
        "except Exception as err:\n"
        "    print(f'rejected: {type(err).__name__}: {err}'); sys.exit(3)\n"
        "print('accepted')\n"
    )
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1")
    result = run_python(["-c", code], env, work, None)
    return {"exit": result["exit"], "answer": result["stdout"].strip()[:160]}


def approximate_flags(src: str, work: Path) -> list[str]:
    """What the version's ``recall`` needs to read approximately: ``--no-exact`` where it
    reads exactly by default (since 1ee5932), nothing before."""
    result = run_cli(src, ["recall", "--help"], work)
    return ["--no-exact"] if "--no-exact" in result["stdout"] else []


def run_case(case: Case, src: str, work: Path, approximate: list[str]) -> dict[str, Any]:
    """Run one case in ``work`` (``APPROXIMATE`` in its argv replaced by ``approximate``): the
    summary, the file's hash change and the case's measures."""
    record: dict[str, Any] = {"method": "CLI"}
    if case.config_check:
        check = check_config(src, work, case.config_check)
        record["config_check"] = check
        if check["answer"] == "accepted":
            record["method"] = "load_config (python -c); CLI not run: accepted would train"
            return record
    memory = work / case.memory if case.memory else None
    if memory is not None:
        record["before"] = {"sha256": sha256(memory), "entries": entry_count(memory)}
    argv = [flag for arg in case.argv for flag in (approximate if arg == APPROXIMATE else [arg])]
    result = run_cli(src, argv, work, case.stdin)
    record.update(summarize(result))
    if memory is not None:
        after = sha256(memory)
        old = record["before"]["sha256"]
        if old is None:
            record["file"] = "absent" if after is None else "created"
        else:
            same = "unchanged" if after == old else "changed"
            record["file"] = "removed" if after is None else same
        record["entries_after"] = entry_count(memory)
        record["temps_left"] = temps(memory)
    if case.measure is not None:
        record.update(case.measure(work))
    return record


def git_revision(src: str) -> str:
    """``commit`` of the source's checkout, with the files under src/ changed since."""
    root = Path(src).resolve().parent
    rev = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split("\n")
    changed = [line[3:] for line in dirty if line.strip()]
    return rev + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")


def git_diff(src: str) -> str:
    """The uncommitted changes under the source's src/ when the run starts."""
    root = Path(src).resolve().parent
    return subprocess.run(
        ["git", "-C", str(root), "diff", "HEAD", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout


def show(arg: Arg) -> str:
    """An argument as text; raw bytes as backslash escapes."""
    return arg.decode("ascii", "backslashreplace") if isinstance(arg, bytes) else arg


def cell(record: dict[str, Any] | None) -> str:
    """One table cell: exit code, traceback or stderr lines, seconds, last line, extras."""
    if record is None:
        return "not run"
    if "exit" not in record:
        return f"accepted ({record['method']})"
    parts = []
    if record["killed"]:
        parts.append(f"killed after {TIMEOUT:g} s")
    else:
        parts.append(f"exit {record['exit']}")
    if record["traceback"]:
        parts.append("traceback")
    else:
        count = record["stderr_lines"]
        parts.append(f"{count} line" + ("" if count == 1 else "s"))
    parts.append(f"{record['seconds']:.1f} s")
    extras = []
    if record["warnings"]:
        extras.append(f"{record['warnings']} Warning")
    if "file" in record:
        extras.append(f"file {record['file']}")
    if record.get("temps_left"):
        extras.append(f"{record['temps_left']} temps left")
    if "entries" in record:
        extras.append(f"entries {record['before']['entries']} → {record['entries']}")
    if "distinct_sources" in record:
        extras.append(f"sources {record['sources']}")
    if record["hits"]:
        extras.append(f"recalled #{', #'.join(map(str, record['hits']))}")
    if record["stdout_first"]:
        extras.append(f"stdout: {record['stdout_first']}")
    if "mode" in record:
        extras.append(f"mode {record['mode']}")
    if record.get("config_check"):
        extras.append(f"load_config: {record['config_check']['answer']}")
    extra = f" [{'; '.join(extras)}]" if extras else ""
    text = f"{', '.join(parts)}{extra}: {record['last_line']}"
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: dict[str, Any]) -> str:
    rows = [
        "# User errors: before and after",
        "",
        f"- before: `{report['sources']['before']['src']}` at {report['sources']['before']['rev']}",
        f"- after: `{report['sources']['after']['src']}` at {report['sources']['after']['rev']}",
        f"- command: `{report['command']}`",
        f"- each case: `python -m r3mem.cli ...` in a fresh temp work dir per version, "
        f"timeout {TIMEOUT:g} s, address space limited to {MEMORY_LIMIT / 2**30:g} GiB, "
        "OMP_NUM_THREADS=1; lines = stderr lines that are not tqdm bars; "
        "file = the named memory file's sha256 after vs before",
        "- train-base cases: the config is first loaded with `load_config(BaseTrainConfig, ...)`"
        " in `python -c`; when accepted the CLI is not run (it would train), when rejected "
        "the CLI `train-base --config X --stop-after 0` is run and shown",
        "",
        "| case | before | after |",
        "| --- | --- | --- |",
    ]
    for case in report["cases"]:
        command = " ".join(case["argv"])
        if case["stdin"]:
            command += f" < {case['stdin']}"
        title = f"{case['title']}: `{command}`".replace("|", "\\|")
        before = cell(report["results"]["before"].get(case["key"]))
        after = cell(report["results"]["after"].get(case["key"]))
        rows.append(f"| {title} | {before} | {after} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before-src", required=True, help="src/ of the version before")
    parser.add_argument("--after-src", required=True, help="src/ of the version after")
    parser.add_argument("--out", default="benchmarks/results", help="output folder")
    parser.add_argument("--only", help="comma-separated case keys (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the temp work dirs")
    args = parser.parse_args()
    chosen = cases()
    if args.only:
        chosen = [case for case in chosen if case.key in args.only.split(",")]
    report: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]),
        "sources": {},
        "cases": [
            {
                "key": case.key,
                "title": case.title,
                "argv": [show(arg) for arg in case.argv],
                "stdin": case.stdin,
            }
            for case in chosen
        ],
        "results": {},
        "fixtures": {},
    }
    root = Path(tempfile.mkdtemp(prefix="r3mem-user-errors-"))
    for label, src in (("before", args.before_src), ("after", args.after_src)):
        src = str(Path(src).resolve())
        report["sources"][label] = {"src": src, "rev": git_revision(src), "diff": git_diff(src)}
        work = root / label
        work.mkdir()
        make_fixtures(work, src, report["fixtures"].setdefault(label, {}))
        results = report["results"].setdefault(label, {})
        approximate = approximate_flags(src, work)
        for case in chosen:
            print(f"{label}: {case.key} ...", file=sys.stderr, flush=True)
            results[case.key] = run_case(case, src, work, approximate)
            print(f"  {cell(results[case.key])[:200]}", file=sys.stderr, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "user_errors.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out / "user_errors.md").write_text(markdown(report))
    if args.keep:
        print(f"work dirs kept in {root}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)
    print(f"wrote {out / 'user_errors.json'} and {out / 'user_errors.md'}")


if __name__ == "__main__":
    main()
