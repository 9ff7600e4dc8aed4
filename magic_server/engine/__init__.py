"""MAGIC synthesis engine: pure torch, no sockets, no file formats."""

from magic_server.engine.api import (
    Cancelled,
    EngineInputError,
    Progress,
    SynthesisOptions,
    SynthesisResult,
)

__all__ = [
    "Cancelled",
    "EngineInputError",
    "Progress",
    "SynthesisOptions",
    "SynthesisResult",
]
