"""The methods a bench compares: baselines and ablations are peers, each a model trained by
``r3mem train`` on the same budget (``configs/bench/``), its ``memory_mode`` saying how it
reads a stream (DESIGN 4).

``--methods`` takes comma-separated specs. ``NAME=DIR`` is the model in DIR under the label
NAME; a bare name is one of the task's built-in methods on the ``--model`` model (``none``:
that model with nothing carried, every segment reading the initial memory; ``base``: its
frozen base, adapters off; ``base-text``: the frozen base reading the ``segment_length``
tokens of text before each segment, the uncompressed reference for one segment's memory).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..memory import Memory


@dataclass(frozen=True)
class Method:
    """One row of a bench table: a label, the model directory (None: ``--model``), whether
    the model reads with its memory, whether its adapters are on (off: the frozen base), and
    whether the frozen base reads one segment's length of the text before each segment."""

    name: str
    model: str | None
    use_memory: bool = True
    adapters: bool = True
    text_before: bool = False


def parse_methods(specs: list[str] | None, task: str, builtin: tuple[str, ...]) -> list[Method]:
    """``NAME=DIR`` and built-in names -> methods; anything else is an error naming it."""
    methods, unknown = [], []
    for spec in specs or builtin:
        name, has_dir, directory = (part.strip() for part in spec.partition("="))
        if has_dir and not (name and directory):
            raise ValueError(f"bench {task}: method {spec!r} must be NAME=DIR")
        if has_dir:
            methods.append(Method(name, directory))
        elif name in builtin:
            frozen = name in ("base", "base-text")
            reads = not frozen and name != "none"
            methods.append(Method(name, None, reads, not frozen, name == "base-text"))
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(
            f"bench {task}: unknown method(s) {', '.join(unknown)} "
            f"(built in: {', '.join(builtin)}; or NAME=DIR for a trained model)"
        )
    names = [method.name for method in methods]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"bench {task}: method name(s) {', '.join(repeated)} given twice")
    return methods


def load_methods(methods: list[Method], model: str | None) -> Iterator[tuple[Method, Memory]]:
    """Each method with its model, loaded one at a time (the ``--model`` one only once)."""
    default: Memory | None = None
    for method in methods:
        if method.model is not None:
            yield method, Memory.load(method.model)
            continue
        if default is None:
            default = Memory.load(model)
        yield method, default
