"""Files shipped inside the package: a public-domain sample text and the default model."""

from importlib.resources import files
from pathlib import Path

SAMPLE_TEXT = "tale_of_two_cities_ch1-2.txt"
DEFAULT_MODEL = "r3mem-tiny-books"  # base/ + adapter/ + MODEL_CARD.md


def asset_path(name: str) -> Path:
    """Path of a packaged file; it exists in a source checkout and in an installed wheel."""
    return Path(str(files(__name__).joinpath(name)))
