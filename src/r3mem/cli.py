"""The ``r3mem`` command line. Each subcommand parses its options and calls the library."""

from __future__ import annotations

import argparse
import logging
import sys

from .readers import DataError


def _train_base(args: argparse.Namespace) -> None:
    from .training.base import BaseTrainConfig, train_base
    from .training.common import load_config

    overrides = {"out_dir": args.out, "steps": args.steps, "seed": args.seed}
    config = load_config(BaseTrainConfig, args.config, overrides)
    out = train_base(config, resume=args.resume, stop_after=args.stop_after)
    print(f"base model written to {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="r3mem", description="Reversible compressed memory for LMs."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    base = commands.add_parser("train-base", help="train the tokenizer and the small base model")
    base.add_argument("--config", help="TOML file (see configs/base-tiny-books.toml)")
    base.add_argument("--out", help="output directory (overrides the config's out_dir)")
    base.add_argument("--steps", type=int, help="total optimizer steps")
    base.add_argument("--seed", type=int)
    base.add_argument("--resume", action="store_true", help="continue from out/checkpoint")
    base.add_argument("--stop-after", type=int, help="end this invocation at this step")
    base.set_defaults(run=_train_base)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (DataError, ValueError, FileNotFoundError, NotImplementedError) as err:
        print(f"r3mem {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
