"""The ``r3mem`` command line. Each subcommand parses its options and calls the library."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from datetime import datetime, timezone

from .files import LOCK_TIMEOUT

# Errors that a user's input or files cause: one line, exit 2. Anything else is a fault of
# ours: one line too, exit 1, and --debug shows its traceback.
USER_ERRORS = (ValueError, OSError, NotImplementedError)


def _train_base(args: argparse.Namespace) -> None:
    from .training.base import BaseTrainConfig, train_base
    from .training.common import load_config

    overrides = {"out_dir": args.out, "steps": args.steps, "seed": args.seed}
    config = load_config(BaseTrainConfig, args.config, overrides)
    out = train_base(config, resume=args.resume, stop_after=args.stop_after)
    print(f"base model written to {out}")


def _train(args: argparse.Namespace) -> None:
    from .training.common import load_config
    from .training.train import TrainConfig, train

    overrides = {"out_dir": args.out, "steps": args.steps, "seed": args.seed}
    config = load_config(TrainConfig, args.config, overrides)
    train(config, resume=args.resume, stop_after=args.stop_after)
    print(f"adapter written to {config.out_dir}/adapter")


def _demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(args.model, args.text)


def _bench(args: argparse.Namespace) -> None:
    from .bench.tasks import run_bench
    from .report import markdown

    methods = args.methods.split(",") if args.methods else None
    report = run_bench(
        args.task,
        model=args.model,
        methods=methods,
        data=args.data,
        seed=args.seed,
        quick=args.quick,
        out=args.out,
        book_tokens=args.book_tokens,
        reader=args.reader,
        questions=args.questions,
        passages=args.passages,
        resume=args.resume,
        entry_tokens=args.entry_tokens,
        part_tokens=args.part_tokens,
    )
    print(markdown(report))


def _remember(args: argparse.Namespace) -> None:
    from .memory import Memory
    from .sources import decode_text, read_texts, text_files

    if args.text == "-":  # each call its own source: notes piped in over time are not one text
        source = f"standard input {datetime.now(timezone.utc).isoformat(timespec='microseconds')}"
        texts = iter([(source, decode_text(sys.stdin.buffer.read(), "standard input"))])
    else:  # each text's source: the file it came from; checked now, read when reached
        texts = ((str(file), next(read_texts(file))[1]) for file in text_files(args.text))
    lengths = {"entry_tokens": args.entry_tokens, "part_tokens": args.part_tokens}
    with Memory.editing(args.memory, args.model, timeout=args.wait, **lengths) as memory:
        before = len(memory.bank)
        added = tokens = evicted = files = 0
        for source, text in texts:
            done = memory.remember(text, source=source, progress=sys.stderr.isatty())
            added, tokens = added + done.entries_added, tokens + done.tokens
            evicted, files = evicted + done.evicted, files + 1
    read = f"{files} texts, " if files > 1 else ""
    folded = f"{evicted} folded into the document memory"
    print(
        f"{args.memory}: +{added} entries ({read}{tokens} tokens), {folded}, "
        f"{before + added - evicted} entries in all"
    )


def _recall(args: argparse.Namespace) -> None:
    from .memory import Memory

    memory = Memory.open(args.memory, args.model)
    if not memory.bank.entries:
        print(f"{args.memory}: no entries to recall from", file=sys.stderr)
    hint = "" if args.exact else " (drop --no-exact for the stored text)"
    for hit in memory.recall(args.query, k=args.k, exact=args.exact):
        print(f"[{hit.score:.3f}] #{hit.entry_id}  {hit.label}{hint}\n{hit.text}\n")


def _chat(args: argparse.Namespace) -> None:
    from .chat import FileNotes, chat
    from .memory import Memory
    from .reader import Reader

    if (args.memory is None) == (args.server is None):
        raise ValueError("give one of --memory FILE or --server URL")
    if args.server is not None:  # the service holds the memory; the model here only reads
        client_module = _serve_module("client")
        client = client_module.Client(args.server, args.key)
        try:
            if args.reader is None:
                reader = Reader.default(Memory.load(args.model))
            else:
                reader = Reader.load(args.reader)
            chat(client_module.ServiceNotes(client, args.user), reader, input, print, args.exact)
        finally:
            client.close()
        return
    with Memory.editing(args.memory, args.model, timeout=args.wait) as memory:
        reader = Reader.default(memory) if args.reader is None else Reader.load(args.reader)
        chat(FileNotes(memory, args.memory), reader, input, print, exact=args.exact)


def _serve_module(name: str):
    """``r3mem.serve.NAME``, or one line on what to install when FastAPI or httpx is missing."""
    import importlib

    try:
        return importlib.import_module(f"r3mem.serve.{name}")
    except ModuleNotFoundError as err:
        raise NotImplementedError(
            f"the memory service needs {err.name}: pip install 'r3mem[serve]'"
        ) from err


def _serve(args: argparse.Namespace) -> None:
    _serve_module("app").serve(
        args.db,
        args.host,
        args.port,
        args.model,
        args.max_batch,
        args.max_request_bytes,
        args.entry_tokens,
        args.part_tokens,
    )


def _keys(args: argparse.Namespace) -> None:
    store = _serve_module("store").Store(args.db)
    try:
        if args.action == "add":
            if args.tenant is None:
                raise ValueError("keys add needs a TENANT")
            key, key_id = store.add_key(args.tenant)
            print(f"{key}\n(key {key_id} for tenant {args.tenant}: shown once, stored hashed)")
        elif args.action == "list":
            for key_id, tenant, _ in store.list_keys():
                print(f"{key_id}  {tenant}")
        elif args.tenant is None or not store.revoke_key(args.tenant):
            raise ValueError(f"keys revoke: no key {args.tenant!r} (see: r3mem keys list)")
        else:
            print(f"key {args.tenant} revoked")
    finally:
        store.close()


def _add_run_options(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument("--config", help=f"TOML file (e.g. {example})")
    parser.add_argument("--out", help="output directory (overrides the config's out_dir)")
    parser.add_argument("--steps", type=int, help="total optimizer steps")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--resume", action="store_true", help="continue from out/checkpoint")
    parser.add_argument("--stop-after", type=int, help="end this invocation at this step")


def _add_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        type=float,
        default=LOCK_TIMEOUT,
        help=f"seconds to wait while another process writes the memory file ({LOCK_TIMEOUT:g})",
    )


def _add_lengths(parser: argparse.ArgumentParser, entries: str, kept: str = "") -> None:
    """--entry-tokens (help: ``entries``, then the default) and --part-tokens; ``kept``: what
    becomes of the lengths of what was stored before."""
    longest = "at most the model's segment length"
    parser.add_argument(
        "--entry-tokens", type=int, help=f"{entries} (default: 32, {longest}){kept}"
    )
    parser.add_argument(
        "--part-tokens",
        type=int,
        help="each entry compressed in parts of at most N tokens, the units unchanged "
        f"(default: the adapters' part_tokens up to the entry length, else the entry length; "
        f"{longest}){kept}",
    )


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    parser = argparse.ArgumentParser(
        prog="r3mem", description="Reversible compressed memory for LMs.", parents=[common]
    )
    parser.set_defaults(debug=False)
    commands = parser.add_subparsers(dest="command", required=True)
    add = functools.partial(commands.add_parser, parents=[common])
    base = add("train-base", help="train the tokenizer and the small base model")
    _add_run_options(base, "configs/base-tiny-books.toml")
    base.set_defaults(run=_train_base)
    adapters = add("train", help="train R³Mem adapters on a frozen base model")
    _add_run_options(adapters, "configs/r3mem-tiny-books.toml")
    adapters.set_defaults(run=_train)
    demo = add("demo", help="write a text into memory and reconstruct it")
    demo.add_argument("--model", help="model directory (default: the shipped model)")
    demo.add_argument("--text", help="a .txt or .txt.gz file (default: a packaged sample)")
    demo.set_defaults(run=_demo)
    remember = add("remember", help="write a text into a memory file")
    remember.add_argument("text", help="a .txt or .txt.gz file, or - for standard input")
    remember.add_argument("--memory", required=True, help="memory file (created if absent)")
    remember.add_argument("--model", help="model directory (default: recorded, or the shipped one)")
    _add_lengths(
        remember,
        "a new memory file's entries of a text, and the parts of longer segments (turn "
        "windows), hold at most N tokens",
        "; a file keeps its own and refuses another N",
    )
    _add_wait(remember)
    remember.set_defaults(run=_remember)
    recall = add("recall", help="passages of a memory file that match a query")
    recall.add_argument("query")
    recall.add_argument("--memory", required=True, help="memory file")
    recall.add_argument("--model", help="model directory (default: the one the file records)")
    recall.add_argument("-k", type=int, default=3, help="how many passages")
    recall.add_argument(
        "--exact",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the stored text, by its corrections (--no-exact: decoded from memory, approximate)",
    )
    recall.set_defaults(run=_recall)
    talk = add("chat", help="a terminal chat with a persistent memory file or service")
    talk.add_argument("--memory", help="memory file (created if absent)")
    talk.add_argument("--server", help="or a memory service's URL (r3mem serve)")
    talk.add_argument("--user", default="me", help="--server: the user whose memory it is")
    talk.add_argument("--key", help="--server: API key (default: $R3MEM_API_KEY)")
    talk.add_argument("--model", help="model directory (default: recorded, or the shipped one)")
    talk.add_argument(
        "--reader", help="causal LM for replies (default: smollm2-135m if installed, else ours)"
    )
    talk.add_argument(
        "--exact",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="recall the stored text, by its corrections (--no-exact: approximate)",
    )
    _add_wait(talk)
    talk.set_defaults(run=_chat)
    server = add("serve", help="a memory service for agents over HTTP (FastAPI)")
    server.add_argument("--db", required=True, help="SQLite file or postgresql:// URL")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8000)
    server.add_argument("--model", help="model directory (default: the shipped one)")
    server.add_argument("--max-batch", type=int, default=16, help="requests run as one batch")
    server.add_argument("--max-request-bytes", type=int, default=1_000_000)
    _add_lengths(
        server,
        "entries of a text added, and the parts of longer turn windows, hold at most N tokens",
        "; entries stored before keep theirs",
    )
    server.set_defaults(run=_serve)
    keys = add("keys", help="API keys of the memory service")
    keys.add_argument("action", choices=("add", "list", "revoke"))
    keys.add_argument("tenant", nargs="?", help="add: the tenant; revoke: the key id")
    keys.add_argument("--db", required=True, help="SQLite file or postgresql:// URL")
    keys.set_defaults(run=_keys)
    bench = add("bench", help="measure methods on one task; writes JSON + Markdown")
    bench.add_argument("task", help="lm, reconstruct, cost, rag or conv")
    bench.add_argument("--model", help="model directory (default: the shipped model)")
    bench.add_argument("--methods", help="comma-separated: the task's methods, or NAME=DIR")
    bench.add_argument("--data", help="data path(s), comma-separated (default: the task's data)")
    bench.add_argument("--book-tokens", type=int, help="lm: tokens per book (0: whole books)")
    bench.add_argument(
        "--reader",
        help="rag, conv: causal LM that answers (default: smollm2-135m if installed, else the "
        "model's base); 'none': retrieval alone",
    )
    bench.add_argument("--questions", type=int, help="rag, conv: a seeded draw of this many")
    bench.add_argument("--passages", type=int, help="rag: the first N passages of each dataset")
    _add_lengths(
        bench,
        "rag: the memory's entries (every method's units) of at most N tokens; conv: the "
        "parts of its turn windows unless --part-tokens says",
    )
    bench.add_argument(
        "--resume",
        action="store_true",
        help="rag, conv: reuse what an interrupted run left in OUT/TASK.partial.jsonl",
    )
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--quick", action="store_true", help="a small slice, for a smoke run")
    bench.add_argument("--out", default="benchmarks/results", help="output directory")
    bench.set_defaults(run=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Runs that take long say what they use; remember, recall and chat print only answers.
    chatty = args.command in ("train-base", "train", "demo", "bench", "serve")
    logging.basicConfig(level=logging.INFO if chatty else logging.WARNING, format="%(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per weight file loaded says nothing to a user
    try:
        args.run(args)
    except KeyboardInterrupt:
        print(f"r3mem {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        user = isinstance(err, USER_ERRORS)
        kind = "error" if user else f"internal error ({type(err).__name__})"
        hint = "" if user else " (run again with --debug for the traceback)"
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"r3mem {args.command}: {kind}: {message}{hint}", file=sys.stderr)
        return 2 if user else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
