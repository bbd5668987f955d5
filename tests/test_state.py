import pytest
import torch

from r3mem import MemoryState

from .test_model import ids, wrapped


@pytest.mark.parametrize("form", ["embedding", "kv"])
def test_save_load_round_trip(tmp_path, form):
    model = wrapped(memory_form=form)
    state = model.write(model.init_memory(2, level="paragraph"), ids(2, 9))
    state.save(tmp_path / "m.safetensors")
    loaded = MemoryState.load(tmp_path / "m.safetensors")
    assert torch.equal(loaded.memory, state.memory)
    assert torch.equal(loaded.tokens_seen, state.tokens_seen)
    assert (loaded.level, loaded.fingerprint) == ("paragraph", model.fingerprint)
    assert torch.equal(model.reconstruct(loaded, 4), model.reconstruct(state, 4))
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_and_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        MemoryState.load(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a valid r3mem memory file"):
        MemoryState.load(bad)


def test_invalid_states_are_refused():
    with pytest.raises(ValueError, match="batch, m, d"):
        MemoryState(torch.zeros(2, 3), "document", torch.zeros(2, dtype=torch.long), "x")
    with pytest.raises(ValueError, match="level"):
        MemoryState(torch.zeros(1, 2, 3), "book", torch.zeros(1, dtype=torch.long), "x")
    with pytest.raises(ValueError, match="tokens_seen"):
        MemoryState(torch.zeros(1, 2, 3), "document", torch.zeros(2, dtype=torch.long), "x")


def test_detach_and_size():
    model = wrapped()
    state = model.write(model.init_memory(1), ids(1, 4))
    assert state.memory.requires_grad and not state.detach().memory.requires_grad
    assert state.nbytes() == 4 * 32 * 4
