"""The shipped default r3mem-tiny-books: packaged in the wheel, offline, small, and it runs."""

from r3mem.assets import DEFAULT_MODEL, asset_path
from r3mem.demo import run_demo
from r3mem.memory import Memory

MAX_BYTES = 25 * 2**20


def test_default_model_is_packaged_small_and_documented():
    root = asset_path(DEFAULT_MODEL)
    files = [p for p in root.rglob("*") if p.is_file()]
    assert {"MODEL_CARD.md", "training_curve.png"} <= {p.name for p in files}
    assert sum(p.stat().st_size for p in files) <= MAX_BYTES
    assert "target ≥ 90%" in (root / "MODEL_CARD.md").read_text(encoding="utf-8")


def test_memory_load_with_no_argument_opens_the_default_and_the_demo_runs():
    memory = Memory.load()
    assert memory.model_dir == asset_path(DEFAULT_MODEL).resolve()
    config = memory.model.config
    assert (config.num_memory_tokens, config.segment_length) == (8, 64)
    lines: list[str] = []
    figures = run_demo(show=lines.append)
    assert "tale_of_two_cities" in lines[0] and "FROM MEMORY" in "\n".join(lines)
    # A trained memory helps the LM on the sample text: this fails for untrained adapters.
    assert figures["ppl_memory"] < figures["ppl_no_memory"]
