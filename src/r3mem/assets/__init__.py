"""Files shipped inside the package: a public-domain sample text and the default model."""

from importlib.resources import files
from pathlib import Path

from ..pretrained import NAMED

SAMPLE_TEXT = "tale_of_two_cities_ch1-2.txt"
DEFAULT_MODEL = "r3mem-tiny-books"  # base/ + adapter/ + MODEL_CARD.md


def asset_path(name: str) -> Path:
    """Path of a packaged file; it exists in a source checkout and in an installed wheel."""
    return Path(str(files(__name__).joinpath(name)))


def packaged_model(name: str) -> Path | None:
    """The folder ``Memory.load(name)`` opens for a base r3mem knows by name
    (``pretrained.NAMED``): ``r3mem-NAME`` (adapter/ + MODEL_CARD.md), whether or not this
    install ships it; None for any other name."""
    return asset_path(f"r3mem-{name}") if name in NAMED else None
