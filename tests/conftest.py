"""Fixtures shared by the test files."""

from __future__ import annotations

import pytest

from magic_server.engine.synthesis import Engine
from magic_server.engines import build_engine


@pytest.fixture(scope="module")
def engine() -> Engine:
    """The engine on the CPU with the untrained classifier (random weights), built as every
    caller builds one (magic_server/engines.py): what the engine tests run, fast and without
    weights files."""
    return build_engine("untrained", "cpu")
