"""Load on ``r3mem serve``: requests/s and p50 / p95 latency of add and search at 1, 8 and 32
concurrent clients, on SQLite and PostgreSQL, and what batching through the model buys.

    OMP_NUM_THREADS=1 python benchmarks/serve_load.py --out benchmarks/results \
        --postgres postgresql://r3mem:r3mem@127.0.0.1:5432/r3mem_bench

For each store, one server (``r3mem serve``, the shipped default model, its own process with
OMP_NUM_THREADS=1) in a fresh database; for each number of clients, two phases of
``--seconds`` each: every client adds paragraphs of the books validation split (one request,
one paragraph) to its own user, then searches its user's memory with a sentence of one of
them (k=5, read back exactly, as search reads by default). Clients are threads with their
own HTTP connection, started together; latencies count from request to answer. Then the
SQLite server again with --max-batch 1 at the largest number of clients: the same work, one
request at a time through the model.

Writes serve_load.{json,md} and serve_load_rps.png under --out (RESULTS.md picks them up).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from r3mem.serve.client import Client, Server
from r3mem.serve.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from user_errors import git_revision

REPO = Path(__file__).resolve().parent.parent
BOOKS = REPO.parent / "shared" / "data" / "books" / "validation"


def paragraphs(count: int, seed: int) -> list[str]:
    """``count`` paragraphs of 200..600 characters from the validation books, seeded."""
    from r3mem.sources import read_texts

    found = [
        " ".join(block.split())
        for _, text in read_texts(BOOKS)
        for block in text.split("\n\n")
        if 200 <= len(" ".join(block.split())) <= 600
    ]
    return random.Random(seed).sample(found, count)


def phase(url: str, key: str, clients: int, seconds: float, work) -> dict:
    """``clients`` threads running ``work(client, worker, n)`` for ``seconds``."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    failures = [0]

    def run(worker: int) -> None:
        client = Client(url, key, timeout=600)
        start.wait()
        n, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            began = time.perf_counter()
            try:
                work(client, worker, n)
            except OSError:
                with lock:
                    failures[0] += 1
            with lock:
                latencies.append(time.perf_counter() - began)
            n += 1
        client.close()

    threads = [threading.Thread(target=run, args=(w,)) for w in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "failures": failures[0],
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
    }


def measure(db: str, label: str, counts: list[int], seconds: float, texts, *options) -> list:
    store = Store(db)
    key = store.add_key("bench")[0]
    store.close()
    rows = []
    with Server(db, key, None, *options) as server:
        for clients in counts:
            user = f"{label}-{clients}-{{}}".format

            def add(client, worker, n, user=user):
                client.add(user(worker), texts[(worker * 997 + n) % len(texts)])

            def search(client, worker, n, user=user):
                text = texts[(worker * 997 + n) % len(texts)]
                client.search(user(worker), text.split(". ")[0], k=5)

            for op, work in (("add", add), ("search", search)):
                row = {"store": label, "clients": clients, "op": op}
                row |= phase(server.url, key, clients, seconds, work)
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def markdown(report: dict) -> str:
    lines = [
        "### serve_load",
        "",
        "`r3mem serve` under load: requests/s and latency of add (one paragraph) and search "
        "(k=5, read back exactly, the default) with concurrent clients, each on its own user.",
        "",
        f"`{report['command']}` · revision {report['revision']} · seed {report['seed']} · "
        f"{report['machine']}",
        "",
        "| store | clients | op | requests | req/s | p50 ms | p95 ms | failures |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['store']} | {r['clients']} | {r['op']} | {r['requests']} | "
            f"{r['requests_per_s']} | {r['p50_ms']} | {r['p95_ms']} | {r['failures']} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, op in zip(axes, ("add", "search"), strict=True):
        for store in sorted({r["store"] for r in report["rows"]}):
            rows = [r for r in report["rows"] if r["store"] == store and r["op"] == op]
            if len(rows) > 1:
                axis.plot(
                    [r["clients"] for r in rows],
                    [r["requests_per_s"] for r in rows],
                    marker="o",
                    label=store,
                )
        axis.set(title=f"{op}", xlabel="concurrent clients", ylabel="requests/s", xscale="log")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--postgres", help="a postgresql:// URL of an empty database")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    texts = paragraphs(400, args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        rows += measure(f"{folder}/load.db", "sqlite", counts, args.seconds, texts)
        if args.postgres:
            rows += measure(args.postgres, "postgresql", counts, args.seconds, texts)
        unbatched = f"{folder}/unbatched.db"
        rows += measure(
            unbatched, "sqlite, --max-batch 1", counts[-1:], args.seconds, texts, "--max-batch", "1"
        )
    import platform

    report = {
        "task": "serve_load",
        "command": "python " + " ".join(sys.argv),
        "revision": git_revision(str(REPO / "src")),
        "seed": args.seed,
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{__import__('os').cpu_count()} cores, server OMP_NUM_THREADS=1",
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_load.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "serve_load.md").write_text(markdown(report))
    plot(report, out / "serve_load_rps.png")
    print(markdown(report))


if __name__ == "__main__":
    main()
