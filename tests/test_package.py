"""Packing a trained model into the shipped layout: half-precision files, same behaviour."""

import torch

from r3mem.memory import Memory
from r3mem.package import package_model


def test_package_round_trip(base_dir, adapter_dir, tmp_path):
    out = tmp_path / "packed"
    size = package_model(base_dir, adapter_dir, out)
    assert {p.name for p in out.iterdir()} == {"base", "adapter"}
    original, packed = Memory.load(adapter_dir), Memory.load(out)
    assert packed.model.write_embeddings.dtype == torch.float32  # computes in fp32 on CPU
    full = sum(p.numel() * 4 for p in original.model.base.parameters())
    assert size < 0.75 * full  # weights stored in half precision
    ids = original.encode("It was the best of times, it was the worst of times.")
    with torch.no_grad():
        a = original.model.write(original.model.init_memory(1), ids)
        b = packed.model.write(packed.model.init_memory(1), ids)
        torch.testing.assert_close(a.memory, b.memory, atol=2e-2, rtol=2e-2)
    assert not list(tmp_path.glob("*.tmp"))
