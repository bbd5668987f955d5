"""Files shipped inside the package: a public-domain sample text and the default model."""

from importlib.resources import files
from pathlib import Path

SAMPLE_TEXT = "tale_of_two_cities_ch1-2.txt"
DEFAULT_MODEL = "r3mem-tiny-books"  # base/ + adapter/ + MODEL_CARD.md
# Adapters shipped for a base r3mem knows by name (``pretrained.NAMED``): adapter/ + MODEL_CARD.md
# under the folder ``r3mem-NAME``, opened by ``Memory.load(NAME)``.
PACKAGED_ADAPTERS = ("smollm2-135m",)


def asset_path(name: str) -> Path:
    """Path of a packaged file; it exists in a source checkout and in an installed wheel."""
    return Path(str(files(__name__).joinpath(name)))


def packaged_model(name: str) -> Path | None:
    """The packaged folder ``Memory.load(name)`` opens for a named base, if it is shipped."""
    if name not in PACKAGED_ADAPTERS:
        return None
    return asset_path(f"r3mem-{name}")
