"""Figures of the core adapter: identity error at init and exact-inversion error, per architecture.

    python benchmarks/core_checks.py --out benchmarks/results

Writes core_checks.json and core_checks.md (command, seed, git revision, figures).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from r3mem import R3MemConfig, R3MemModel
from r3mem.report import markdown, write_report
from r3mem.tiny import ARCHITECTURES, tiny_base


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return ((approx - exact).norm() / exact.norm()).item()


def measure(arch: str, seed: int, trials: int) -> dict:
    ids = torch.randint(0, 64, (4, 48), generator=torch.Generator().manual_seed(seed))
    expected = tiny_base(arch, seed=seed)(ids).logits
    model = R3MemModel.from_base(tiny_base(arch, seed=seed), R3MemConfig())
    identity = (model(input_ids=ids).logits - expected).abs().max().item()
    generator = torch.Generator().manual_seed(seed)
    worst_coupling = worst_stack = 0.0
    for _ in range(trials):
        with torch.no_grad():
            for param in model.couplings.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) / param.shape[-1] ** 0.5)
            h = torch.randn(4, 48, 32, generator=generator) * 3
            for coupling in model.couplings:
                worst_coupling = max(
                    worst_coupling, relative_error(coupling.inverse(coupling(h)), h)
                )
            worst_stack = max(
                worst_stack, relative_error(model.couplings.inverse(model.couplings(h)), h)
            )
    return {
        "method": arch,
        "identity_max_abs_error": identity,
        "inversion_rel_error_coupling": worst_coupling,
        "inversion_rel_error_stack": worst_stack,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    results = [measure(arch, args.seed, args.trials) for arch in ARCHITECTURES]
    report = write_report(args.out, "core_checks", args.seed, results)
    print(markdown(report))


if __name__ == "__main__":
    main()
