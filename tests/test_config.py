import json
import re

import pytest

from r3mem import R3MemConfig


def test_json_round_trip(tmp_path):
    config = R3MemConfig(
        num_memory_tokens=4,
        segment_length=32,
        decoder="separate",
        lora_target_modules=["q_proj"],
        extra={"seed": 3},
    )
    assert R3MemConfig.from_json(config.to_json()) == config
    config.save(tmp_path / "c.json")
    assert R3MemConfig.load(tmp_path / "c.json") == config
    assert R3MemConfig.from_json(R3MemConfig(part_tokens=16).to_json()).part_tokens == 16


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_memory_tokens", 0),
        ("segment_length", -1),
        ("adapter_rank", 2.5),
        ("bptt_segments", True),
        ("lambda_rec", -0.1),
        ("lambda_cyc", "x"),
        ("decoder", "backwards"),
        ("memory_form", "cache"),
        ("reversible", 1),
        ("lora_rank", 0),
        ("lora_dropout", 1.0),
        ("lora_target_modules", []),
        ("doc_cue_length", -2),
        ("memory_mode", "rolling"),
        ("window_segments", 0),
        ("summary_segments", 1.5),
        ("part_tokens", 0),
        ("part_tokens", 65),  # over the segment length, 64
    ],
)
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        R3MemConfig(**{field: value})


def test_inverse_decoder_needs_reversible():
    with pytest.raises(ValueError, match="decoder='inverse'"):
        R3MemConfig(reversible=False)
    assert R3MemConfig(reversible=False, decoder="separate").decoder == "separate"


LM_ONLY = dict(lambda_rec=0.0, lambda_doc=0.0, lambda_ent=0.0, lambda_cyc=0.0)


@pytest.mark.parametrize("mode", ["window", "none"])
@pytest.mark.parametrize("term", ["lambda_rec", "lambda_doc", "lambda_ent", "lambda_cyc"])
def test_modes_without_a_written_memory_refuse_decoding_terms(mode, term):
    with pytest.raises(
        ValueError, match=re.escape(f"R3MemConfig.{term} must be 0 with memory_mode='{mode}'")
    ):
        R3MemConfig(memory_mode=mode, **{**LM_ONLY, term: 0.5})
    assert R3MemConfig(memory_mode=mode, **LM_ONLY).memory_mode == mode
    assert R3MemConfig(memory_mode="accumulate", **{**LM_ONLY, term: 0.5}).memory_mode


@pytest.mark.parametrize("mode", ["accumulate", "window", "none"])
def test_baseline_modes_need_the_embedding_form(mode):
    with pytest.raises(
        ValueError, match=re.escape("R3MemConfig.memory_form='kv' needs memory_mode")
    ):
        R3MemConfig(memory_mode=mode, memory_form="kv", **LM_ONLY)


def test_unknown_key_refused(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"num_memory_tokens": 4, "memory_tokens": 8}))
    with pytest.raises(ValueError, match="memory_tokens"):
        R3MemConfig.load(path)


def test_corrupt_json_names_the_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"c\.json"):
        R3MemConfig.load(path)
