import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from r3mem.coupling import Coupling, CouplingStack, ResidualAdapter, find_decoder_layers

from .conftest import make_base, randomize


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """||approx - exact|| / ||exact||, the usual relative error of a vector."""
    return ((approx - exact).norm() / exact.norm().clamp(min=1e-12)).item()


def test_identity_at_init():
    coupling = Coupling(16, rank=4)
    h = torch.randn(3, 5, 16)
    assert torch.equal(coupling(h), h)
    assert torch.equal(coupling.inverse(h), h)


@settings(max_examples=40, deadline=None)
@given(
    half=st.integers(1, 24),
    rank=st.integers(1, 8),
    scale=st.floats(0.01, 4.0),
    seed=st.integers(0, 2**16),
)
def test_inversion_is_exact_up_to_rounding(half, rank, scale, seed):
    """In float64 the inverse gives the input back to rounding, however strong the coupling:
    the algorithm is exact, whatever float32 makes of a badly conditioned one."""
    coupling = Coupling(2 * half, rank).double()
    randomize(coupling, scale=scale, seed=seed)
    h = torch.randn(2, 7, 2 * half, generator=torch.Generator().manual_seed(seed)).double() * 3
    out = coupling(h)
    assert not torch.allclose(out, h)  # the randomised coupling really transforms
    assert relative_error(coupling.inverse(out), h) <= 1e-12
    assert relative_error(coupling(coupling.inverse(h)), h) <= 1e-12


@settings(max_examples=40, deadline=None)
@given(
    half=st.integers(1, 24),
    rank=st.integers(1, 8),
    scale=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**16),
)
def test_exact_inversion_of_one_coupling(half, rank, scale, seed):
    """float32, weights up to the size that keeps a layer's output the size of its input (a
    trained layer's, roughly): 1.4e-7 at worst over 1,500 random draws, bound 1e-5. Larger
    weights (2/sqrt(fan_in) with a rank-1 bottleneck) reached 1.1e-5 in float32."""
    coupling = Coupling(2 * half, rank)
    randomize(coupling, scale=scale, seed=seed)
    h = torch.randn(2, 7, 2 * half, generator=torch.Generator().manual_seed(seed)) * 3
    out = coupling(h)
    assert not torch.allclose(out, h)
    assert relative_error(coupling.inverse(out), h) <= 1e-5
    assert relative_error(coupling(coupling.inverse(h)), h) <= 1e-5


@settings(max_examples=15, deadline=None)
@given(layers=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_exact_inversion_of_the_stack(layers, seed):
    base = make_base("llama", layers=layers)
    _, blocks = find_decoder_layers(base)
    stack = CouplingStack(blocks, hidden_size=32, rank=8, reversible=True)
    randomize(stack, scale=1.0, seed=seed)
    h = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(seed))
    assert relative_error(stack.inverse(stack(h)), h) <= 1e-5


@pytest.mark.parametrize(
    ("arch", "name"),
    [
        ("llama", "model.layers"),
        ("qwen2", "model.layers"),
        ("mistral", "model.layers"),
        ("gpt2", "transformer.h"),
    ],
)
def test_decoder_layers_found_generically(arch, name):
    found, layers = find_decoder_layers(make_base(arch, layers=3))
    assert (found, len(layers)) == (name, 3)


def test_no_layer_stack_is_an_error():
    with pytest.raises(ValueError, match="no stack of repeated decoder layers"):
        find_decoder_layers(torch.nn.Linear(3, 3))


def test_hooks_follow_the_mode():
    base = make_base("llama")
    _, blocks = find_decoder_layers(base)
    stack = CouplingStack(blocks, hidden_size=32, rank=4, reversible=True)
    randomize(stack)
    ids = torch.randint(0, 64, (1, 6))
    plain = base(ids).logits
    with stack.use("forward"):
        forward = base(ids).logits
    with stack.use("inverse"):
        inverse = base(ids).logits
    assert stack.mode == "off"
    assert torch.equal(base(ids).logits, plain)
    assert not torch.allclose(forward, plain) and not torch.allclose(inverse, forward)
    with pytest.raises(ValueError, match="coupling mode"):
        stack.set_mode("sideways")


def test_residual_adapter_has_no_inverse():
    adapter = ResidualAdapter(8, rank=2)
    with pytest.raises(RuntimeError, match="no inverse"):
        adapter.inverse(torch.zeros(1, 8))


def test_odd_hidden_size_refused():
    with pytest.raises(ValueError, match="even hidden size"):
        Coupling(7, rank=2)
