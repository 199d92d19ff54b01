"""ojs-memory: the in-memory reference backend for OJS."""

from .backend import MemoryBackend

__all__ = ["MemoryBackend"]
__version__ = "0.2.0"
