"""r3mem: compressed, hierarchical and reversible long-term memory for Hugging Face decoder LMs."""

from .cell import R3MemOutput
from .config import R3MemConfig
from .memory import Memory
from .model import R3MemModel
from .state import MemoryState

__all__ = ["Memory", "MemoryState", "R3MemConfig", "R3MemModel", "R3MemOutput"]
