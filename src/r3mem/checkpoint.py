"""PEFT-style adapter files: ``adapter_config.json`` + ``adapter_model.safetensors``, never pickle.

Only the trainable weights are saved; the base model is named, checked, never copied.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import socket
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .assets import DEFAULT_MODEL, asset_path, packaged_model
from .config import R3MemConfig
from .coupling import find_decoder_layers
from .files import atomic_path, atomic_write
from .pretrained import NAMED, resolve

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
# A model folder's layout (the shipped default's): ``adapter/``, and ``base/`` beside it,
# which its adapter names as its base.
PACKAGED_ADAPTER = "adapter"
PACKAGED_BASE = "base"
SPEC_KEYS = ("vocab_size", "hidden_size", "num_layers")
# R3MemConfig fields added after adapters were first saved, with the value under which those
# adapters computed.
LATER_FIELDS = {
    "memory_mode": "recurrent",
    "window_segments": R3MemConfig.window_segments,
    "summary_segments": R3MemConfig.summary_segments,
    "write_positions": "after_text",
    "lambda_ret": 0.0,  # trained before L_ret existed: without it
    "retrieval_cue_length": R3MemConfig.retrieval_cue_length,
    "retrieval_temperature": R3MemConfig.retrieval_temperature,
    "lm_reader": "adapted",
    "part_tokens": None,  # memories wrote an entry in parts of its length
}


def load_base(name_or_path: str | os.PathLike, dtype: torch.dtype | None = None) -> nn.Module:
    """A base model by name (:mod:`r3mem.pretrained`, or the hub's) or path, in ``dtype``;
    by default float32 on CPU (half precision there is slow and lossy), the stored dtype on
    a GPU."""
    from transformers import AutoModelForCausalLM

    dtype = dtype or default_load_dtype()
    base = AutoModelForCausalLM.from_pretrained(model_source(name_or_path), dtype=dtype)
    if str(name_or_path) in NAMED:  # adapters saved on it name it, not this machine's cache
        base.config.name_or_path = str(name_or_path)
    return base


def default_load_dtype() -> torch.dtype | str:
    """The dtype :func:`load_base` loads in unless told: the stored one on a GPU, else float32."""
    return "auto" if torch.cuda.is_available() else torch.float32


def locate_model(path: str | os.PathLike | None) -> tuple[Path, Path, str | Path]:
    """Where ``Memory.load(path)`` finds its model: the folder ``path`` names, its adapter
    folder and its base (a folder, or a name or path for :func:`load_base`). ``path`` is a
    model folder (``base/`` + ``adapter/``, the shipped default's layout, used when ``path``
    is None), an adapter folder whose config names its base, or the name of a base whose
    adapters ship in the package (``smollm2-135m``); a local folder wins over a name."""
    named = path is not None and not Path(path).exists()
    shipped = packaged_model(str(path)) if named else None
    root = Path(shipped or (asset_path(DEFAULT_MODEL) if path is None else path))
    if (root / PACKAGED_ADAPTER / CONFIG_NAME).is_file():
        adapter_dir = root / PACKAGED_ADAPTER
    elif (root / CONFIG_NAME).is_file():
        adapter_dir = root
    elif shipped is not None:
        raise FileNotFoundError(
            f"{path}: no adapters for it are packaged in this install ({root}); a source "
            f"checkout trains and packages them with {NAMED[str(path)].pipeline}"
        )
    else:
        hint = " (the shipped default is missing from this install)" if path is None else ""
        raise FileNotFoundError(f"{root}: no r3mem model here{hint}")
    base_dir = base_name(adapter_dir)
    if adapter_dir != root and base_dir == PACKAGED_BASE:  # base/ beside adapter/
        base_dir = root / PACKAGED_BASE
        if not base_dir.is_dir():
            raise FileNotFoundError(f"{root}: the adapter's base/ is missing beside it")
    return root, adapter_dir, base_dir


def model_source(name_or_path: str | os.PathLike) -> str:
    """What to hand ``from_pretrained`` for a model: the folder of a model r3mem knows by name
    (converted on first use), a folder here, or a hub name the hub can be asked for. Anything
    else fails at once, naming it, instead of after a minute of retries with no network."""
    name = resolve(str(name_or_path))
    if name and Path(name).expanduser().is_dir():
        return name
    shaped = re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) and not name.startswith(".")
    if not shaped or Path(name).exists():
        raise FileNotFoundError(f"{name!r}: no such model folder")
    from huggingface_hub import constants, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    proxied = any(os.environ.get(key) for key in ("HTTPS_PROXY", "https_proxy"))
    if cached or proxied or constants.HF_HUB_OFFLINE:
        return name  # from the local cache, or through a proxy this check cannot see
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or 443
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as err:
        raise FileNotFoundError(
            f"{name}: no such model folder here, and the model hub ({host}) cannot be "
            f"reached to fetch it by name ({err}; HF_HUB_OFFLINE=1 reads its cache only)"
        ) from None
    return name


def base_spec(base_model: nn.Module) -> dict[str, Any]:
    """The facts about a base model that an adapter depends on, read generically."""
    vocab_size, hidden_size = base_model.get_input_embeddings().weight.shape
    config = getattr(base_model, "config", None)
    return {
        "model_type": getattr(config, "model_type", type(base_model).__name__),
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_layers": len(find_decoder_layers(base_model)[1]),
    }


def fingerprint(spec: dict, config: R3MemConfig, embeddings: torch.Tensor) -> str:
    """Hash of the base model's shape and a slice of its embedding weights, plus the config
    fields that decide what a memory vector means (``memory_mode`` and ``write_positions``
    only when not the value they had before they existed, so memories written then keep
    their fingerprint)."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    fields = {k: getattr(config, k) for k in ("num_memory_tokens", "memory_form", "reversible")}
    if config.memory_mode != "recurrent":
        fields["memory_mode"] = config.memory_mode
    if config.write_positions != "after_text":
        fields["write_positions"] = config.write_positions
    digest.update(json.dumps(fields, sort_keys=True).encode())
    digest.update(embeddings.detach()[:8].float().cpu().numpy().tobytes())
    return digest.hexdigest()


def adapter_digest(weights: dict[str, torch.Tensor]) -> str:
    """Hash of the adapter weights (``model.trainable_parameters()``): a memory written through
    one adapter means nothing to another on the same base (the fingerprint covers only the
    base and the config)."""
    digest = hashlib.sha256()
    for name, param in sorted(weights.items()):
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _package_version() -> str:
    try:
        return version("r3mem")
    except PackageNotFoundError:
        return "unknown"


def save_adapter(
    directory: str | Path, meta: dict[str, Any], weights: dict[str, torch.Tensor]
) -> None:
    """Write ``adapter_config.json`` (``meta`` plus the package version) and
    ``adapter_model.safetensors``; each goes to a temporary name and is renamed, so a crash
    mid-save never leaves a half-written adapter where a good one stood."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
    text = json.dumps({"r3mem_version": _package_version(), **meta}, indent=2, sort_keys=True)
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    atomic_write(directory / CONFIG_NAME, text + "\n")


def read_adapter_config(directory: str | Path) -> dict[str, Any]:
    """The adapter's metadata; a config saved before ``write_positions`` existed computed
    its write positions ``after_text``, and says so once read."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no adapter config (is {directory} an r3mem adapter?)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a valid r3mem adapter config ({err})") from err

    def expect(ok: bool, why: str) -> None:
        if not ok:
            raise ValueError(f"{path}: not a valid r3mem adapter config: {why}")

    expect(isinstance(meta, dict), "not a JSON object")
    config, base = meta.get("r3mem_config"), meta.get("base_model")
    expect(isinstance(config, dict), "r3mem_config missing or not an object")
    expect(isinstance(base, dict), "base_model missing or not an object")
    # Adapters record every field; fields added since fill in as the adapters that came
    # before them computed, any other missing one is an error (it would silently take
    # today's default: a kv adapter read as embedding decodes garbage).
    config = {**LATER_FIELDS, **config}
    missing = sorted({f.name for f in dataclasses.fields(R3MemConfig)} - set(config))
    expect(not missing, f"r3mem_config lacks {', '.join(missing)}")
    for key in SPEC_KEYS:
        value = base.get(key)
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        expect(ok, f"base_model.{key} missing or not a positive integer")
    expect(isinstance(base.get("name_or_path"), str), "base_model.name_or_path missing")
    R3MemConfig.from_dict(config)  # ValueError naming the field
    return {**meta, "r3mem_config": config}


def base_name(directory: str | Path) -> str:
    """The base model (hub name or path) an adapter directory was trained on."""
    return read_adapter_config(directory)["base_model"]["name_or_path"]


def read_adapter_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    path = Path(directory) / WEIGHTS_NAME
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: unreadable adapter weights ({err})") from err


def check_base(meta: dict[str, Any], spec: dict[str, Any], directory: str | Path) -> None:
    """The base model an adapter is loaded onto must be shaped as the one it was trained on."""
    for key in SPEC_KEYS:
        saved, found = meta["base_model"][key], spec[key]
        if saved != found:
            raise ValueError(
                f"{directory}: adapter was trained for a base model with {key}={saved}, "
                f"but this base model has {key}={found}"
            )


def load_trainable(
    params: dict[str, nn.Parameter], weights: dict[str, torch.Tensor], path: str | Path
) -> None:
    """Copy ``weights`` into ``params`` (a model's trainable parameters); any missing,
    unexpected or misshapen tensor is an error naming ``path``."""
    missing, unexpected = sorted(set(params) - set(weights)), sorted(set(weights) - set(params))
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not fit this model (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    for name, param in params.items():
        if weights[name].shape != param.shape:
            raise ValueError(
                f"{path}: {name} has shape {tuple(weights[name].shape)}, "
                f"model expects {tuple(param.shape)}"
            )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name])


def load_adapter_into(model: nn.Module, directory: str | Path, free: tuple[str, ...]) -> None:
    """Start ``model`` (an R3MemModel, fresh adapters) from the adapters saved in ``directory``:
    a new run that goes on from them, on data or an objective of its own. The base must be
    the one they were trained on and the adapters the same (every config field but those
    in ``free``, which a run may change, and ``part_tokens``, which training never reads);
    their weights are copied in, in the model's dtype."""
    meta = read_adapter_config(directory)
    check_base(meta, base_spec(model.base), directory)
    saved = R3MemConfig.from_dict(meta["r3mem_config"]).to_dict()
    ours = model.config.to_dict()
    free = (*free, "extra", "part_tokens")
    differ = [key for key in ours if key not in free and saved.get(key) != ours[key]]
    if differ:
        found = ", ".join(f"{key}={saved.get(key)!r} (here {ours[key]!r})" for key in differ)
        raise ValueError(f"{directory}: adapters unlike this run's [r3mem] table: {found}")
    weights = read_adapter_weights(directory)
    load_trainable(model.trainable_parameters(), weights, Path(directory) / WEIGHTS_NAME)
